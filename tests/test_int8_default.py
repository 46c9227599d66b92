"""The default CPU path: U2-Net as a calibrated int8 export on ONNX Runtime where the CPU has int8
units, built once per set of weights and cached; fp32 PyTorch elsewhere; bf16 only when asked."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from clearbg.inference.cpu import int8_native
from clearbg.inference.int8_cache import cached_int8, calibration_photos, int8_path
from clearbg.inference.predictor import Predictor
from clearbg.models.download import cache_dir
from clearbg.models.hub import resolve


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
