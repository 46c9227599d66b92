"""`pip install clearbg` is a library: the base install removes backgrounds, the rest is extras.

A fresh venv gets the base package only (with the tested versions of constraints.txt), runs
`clearbg remove` on a real photo, and a command whose extra is missing names the extra."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tomllib

import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_base_dependencies_are_ranges_and_constraints_pin_them():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # Names compare as pip compares them (PEP 503): pillow_heif and pillow-heif are one package.
    pins = {line.split("==")[0].lower().replace("_", "-"): line.split("==")[1].strip()
            for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line and not line.startswith("#")}
    for requirement in project["dependencies"]:
        assert "==" not in requirement, f"{requirement}: declare a range in pyproject.toml, pin in constraints.txt"
        name = requirement.split(">")[0].split("<")[0].split("[")[0].strip().lower().replace("_", "-")
        assert name in pins, f"{name} has no tested version in constraints.txt"
    assert pins["torch"] == "2.13.0"  # a looser torch pulls a multi-GB CUDA build
    assert {"mlflow", "pyspark", "fastapi", "optuna"} - {r.split(">")[0] for r in project["dependencies"]} == {
        "mlflow", "pyspark", "fastapi", "optuna"}


@pytest.mark.slow
def test_base_install_in_a_fresh_venv_removes_a_background(tmp_path, fashion_photo):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "setuptools>=77"], check=True, timeout=300, capture_output=True)
    done = subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), str(ROOT)], timeout=900, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    photo = tmp_path / "photo.jpg"
    fashion_photo.resize((220, 330)).save(photo)
    env = {**os.environ, "PYTHONPATH": ""}  # the venv's own clearbg, not the source tree
    clearbg = str(venv / "bin" / "clearbg")
    result = subprocess.run([clearbg, "remove", str(photo), "--out", str(tmp_path / "out")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(tmp_path / "out" / "photo.png") as cutout:
        assert cutout.mode == "RGBA" and cutout.size == (220, 330)
        alpha = cutout.getchannel("A")
        assert alpha.getextrema() == (0, 255)  # some background removed, some product kept

    absent = subprocess.run([str(venv / "bin" / "python"), "-c", "import mlflow"], capture_output=True, timeout=60)
    assert absent.returncode != 0  # the base install leaves the training stack out ...
    train = subprocess.run([clearbg, "train", "--data", str(tmp_path)], env=env, capture_output=True, text=True,
                           timeout=300)
    assert train.returncode != 0
    assert "pip install 'clearbg[" in train.stderr, train.stderr[-2000:]  # ... and says how to get it
