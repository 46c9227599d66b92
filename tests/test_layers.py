"""The package's layering (pyproject.toml [tool.importlinter]) holds: an upward import, even one
hidden inside a function, fails this test."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _lint(cwd: pathlib.Path) -> subprocess.CompletedProcess:
    # lint-imports is installed beside this interpreter (a venv's bin/ need not be on PATH).
    beside = pathlib.Path(sys.executable).parent / "lint-imports"
    command = str(beside) if beside.exists() else shutil.which("lint-imports") or "lint-imports"
    return subprocess.run([command, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(cwd / "src"), "PATH": "/usr/bin:/bin"})


def test_no_module_imports_from_a_layer_above_it():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.slow
def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    models = copy / "src" / "clearbg" / "models" / "specs.py"
    models.write_text(models.read_text() + "\n\ndef _sneaky():\n    from clearbg.registry import promote  # noqa\n")
    result = _lint(copy)
    assert result.returncode != 0
    assert "clearbg.models.specs -> clearbg.registry" in result.stdout.replace("\n", " ") or "broken" in result.stdout
