"""The default CPU path: U2-Net as a calibrated int8 export on ONNX Runtime where the CPU has int8
units, built once per set of weights and cached; fp32 PyTorch elsewhere; bf16 only when asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clearbg.inference.cpu import int8_native
from clearbg.inference.int8_cache import cached_int8, calibration_photos, int8_path, released_int8_path
from clearbg.inference.predictor import Predictor
from clearbg.models.download import cache_dir
from clearbg.models.hub import resolve
from clearbg.models.specs import get_spec


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= 0.5, b >= 0.5
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_the_default_on_cpu_is_int8_where_the_cpu_has_int8_units():
    default = Predictor("u2netp", device="cpu")
    if int8_native():
        assert (default.engine, default.precision) == ("onnxruntime", "int8")
        assert default.module.metadata.variant == "int8" and "onnxruntime int8 (" in default.summary
    else:
        assert (default.engine, default.precision) == ("torch", "fp32")
    torch_default = Predictor("u2netp", device="cpu", engine="torch")
    assert (torch_default.engine, torch_default.precision) == ("torch", "fp32")  # bf16 is never chosen for you
    with pytest.raises(ValueError, match="int8 runs on ONNX Runtime"):
        Predictor("u2netp", precision="int8", engine="torch")
    # An architecture whose int8 export was never measured keeps fp32.
    assert Predictor(resolve("unet.scratch", pretrained=False), device="cpu").precision == "fp32"


def test_the_shipped_calibration_photos_are_real_photos_of_both_domains():
    photos = calibration_photos()
    assert len(photos) == 16 and all(p.mode == "RGB" and min(p.size) >= 300 for p in photos)
    assert len({np.asarray(p.resize((8, 8))).tobytes() for p in photos}) == 16


@pytest.mark.slow
def test_int8_is_built_once_per_weights_and_keeps_fp32_masks(tmp_path, monkeypatch, tiny_pairs, capfd):
    weights = cache_dir() / "weights"
    monkeypatch.setenv("CLEARBG_HOME", str(tmp_path))
    (tmp_path / "weights").symlink_to(weights)
    official, fashion = resolve("u2netp"), resolve("fashion")
    path = cached_int8(official)
    assert path.parent == tmp_path / "int8" and path.name.startswith("u2netp.official-")
    assert "building the int8 model of u2netp.official once (calibrating on 16 photos" in capfd.readouterr().err
    built = path.stat().st_mtime_ns
    assert cached_int8(official) == path and path.stat().st_mtime_ns == built
    assert "building" not in capfd.readouterr().err
    # Other weights, another file: a fine-tuned model never runs the official model's export.
    assert int8_path(fashion) != path and int8_path(fashion).name.startswith("u2netp.fashion-")
    assert sorted(os.listdir(tmp_path / "int8")) == [path.name]  # atomic write: no temp file left

    photos = [Image.open(r["image"]).convert("RGB") for r in tiny_pairs][:6]
    int8 = Predictor(official, precision="int8").predict(photos)
    fp32 = Predictor(official, engine="torch", precision="fp32").predict(photos)
    agreement = [iou(a, b) for a, b in zip(int8, fp32)]
    assert min(agreement) > 0.97 and np.mean(agreement) > 0.985, agreement


def test_the_cache_key_comes_from_the_weights_file_so_no_network_is_needed_to_find_it():
    for name in ("u2netp", "fashion"):
        assert released_int8_path(get_spec(name)) == int8_path(resolve(name))
    # A network given in memory has no file: its tensors are the key, and other tensors another key.
    official = resolve("u2netp")
    in_memory = resolve(official.network)
    assert in_memory.weights_file is None and int8_path(in_memory) != int8_path(official)
    assert int8_path(in_memory) == int8_path(resolve(resolve("u2netp").network))


@pytest.mark.skipif(not int8_native(), reason="the int8 default needs VNNI/AMX-INT8")
def test_one_photo_from_the_command_line_never_imports_pytorch(tmp_path, tiny_pairs):
    cached_int8(resolve("u2netp"))  # what setup's `clearbg download` builds
    photo = tiny_pairs[0]["image"]
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "clearbg", "remove", str(photo), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported and "clearbg.inference.predictor" in imported
    assert not {m for m in imported if m == "torch" or m.startswith("torch.")}
    assert not {m for m in imported if m.startswith("sqlalchemy")}  # the review queue loads when used
    assert "u2netp.official on cpu: onnxruntime int8" in run.stderr
    assert (tmp_path / f"{Path(photo).stem}.png").is_file()
    # The same masks as the path that loads the network first.
    photos = [Image.open(photo).convert("RGB")]
    fast = Predictor("u2netp", device="cpu").predict(photos)[0]
    loaded = Predictor(resolve("u2netp"), device="cpu", precision="int8").predict(photos)[0]
    assert np.array_equal(fast, loaded)
