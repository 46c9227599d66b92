"""Models: official state-dict layout, strict loading, ONNX conversion parity, the registry."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from clearbg.errors import CheckpointMismatch, UnknownModel, WeightsIntegrityError, WeightsNotFound
from clearbg.models import create_model, get_spec, list_models
from clearbg.models.download import cached_onnx, cached_weights, download
from clearbg.models.onnx_import import conv_execution_order
from clearbg.inference.optimize import fold_batchnorm
from clearbg.models.weights import load_model_file, load_state_dict_strict

ARCHS = ["u2netp", "u2net"]


def reference(shared, arch):
    return json.loads((shared / "reference" / f"{arch}_state_dict.json").read_text())


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_matches_official_layout_key_for_key(shared, arch):
    expected = [(e["key"], e["shape"]) for e in reference(shared, arch)["state_dict"]]
    actual = [(k, list(v.shape)) for k, v in create_model(arch, pretrained=False).state_dict().items()]
    assert actual == expected


@pytest.mark.parametrize("arch", ARCHS)
def test_conv_execution_order_matches_the_reference_onnx_map(shared, arch):
    conv_map = json.loads((shared / "reference" / "onnx_conv_map.json").read_text())["models"]
    (entry,) = [v for k, v in conv_map.items() if k.startswith(f"rembg_{arch} ")]
    assert conv_execution_order(create_model(arch, pretrained=False)) == [
        c["prefix"].removesuffix(".conv_s1") + (".conv_s1" if c["prefix"].endswith("conv_s1") else "")
        for c in entry["convs"]
    ]


def official_like_checkpoint(arch: str) -> dict[str, torch.Tensor]:
    """A state dict as the official training script saves it (random values)."""
    torch.manual_seed(0)
    model = create_model(arch, pretrained=False)
    for p in model.parameters():
        p.data.normal_()
    return model.state_dict()


def test_official_checkpoint_loads_strict_with_module_prefix_and_without_bn_counters():
    state = official_like_checkpoint("u2netp")
    variants = {
        "plain": state,
        "ddp": {f"module.{k}": v for k, v in state.items()},
        "old-torch": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")},
    }
    for name, variant in variants.items():
        model = load_state_dict_strict(create_model("u2netp", pretrained=False), variant, name)
        assert torch.equal(model.state_dict()["outconv.weight"], state["outconv.weight"]), name


def test_mismatched_checkpoint_lists_every_bad_key():
    state = official_like_checkpoint("u2netp")
    del state["side3.bias"]
    state["outconv.weight"] = torch.zeros(1, 7, 1, 1)
    state["extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatch) as err:
        load_state_dict_strict(create_model("u2netp", pretrained=False), state, "bad.pth")
    message = str(err.value)
    assert "missing: side3.bias" in message
    assert "unexpected: extra.weight" in message
    assert "shape: outconv.weight" in message and "bad.pth" in message


def test_checkpoint_file_builds_the_architecture_it_fits(tmp_path):
    path = tmp_path / "trained.pth"
    torch.save({"model": official_like_checkpoint("u2net"), "epoch": 3}, path)
    model, arch = load_model_file(path)
    assert arch == "u2net" and sum(p.numel() for p in model.parameters()) == 44_009_869
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatch, match="trained.pth"):
        load_model_file(path)


def test_fold_batchnorm_keeps_the_output():
    torch.manual_seed(0)
    model = create_model("u2netp", pretrained=False).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        before = model(x, fused_only=True)
        after = fold_batchnorm(model)(x, fused_only=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_converted_official_weights_equal_onnxruntime_on_a_real_photo(arch, fashion_photo):
    spec = get_spec(arch)
    size = spec.input_size
    rgb = np.asarray(fashion_photo.resize((size, size)), np.float32) / 255.0
    x = ((rgb - spec.preprocess.mean) / spec.preprocess.std).transpose(2, 0, 1)[None].astype(np.float32)
    session = ort.InferenceSession(str(cached_onnx(spec)), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x})
    with torch.no_grad():
        actual = create_model(arch).eval()(torch.from_numpy(x))
    assert len(actual) == len(expected) == 7
    diff = max(float(np.abs(a.numpy() - e).max()) for a, e in zip(actual, expected))
    assert diff < 1e-4


def test_cached_pth_is_in_the_official_layout_and_loads_strict():
    state = torch.load(cached_weights(get_spec("u2netp")), weights_only=True)
    model = create_model("u2netp", pretrained=False)
    model.load_state_dict(state, strict=True)
    # BatchNorm was folded into the convs by the exporter, so bn_s1 is an identity.
    assert torch.all(state["stage1.rebnconvin.bn_s1.weight"] == 1)


def test_registry_resolves_bare_names_and_rejects_unknown_ones():
    assert {"u2net.official", "u2netp.official"} <= set(list_models())
    assert get_spec("u2netp").name == "u2netp.official"
    with pytest.raises(UnknownModel, match="u2netp"):
        get_spec("u3net")


def test_missing_weights_name_the_command_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("CLEARBG_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFound, match="clearbg download u2netp.official"):
        create_model("u2netp")


def test_download_refuses_a_file_whose_sha256_differs(tmp_path, monkeypatch):
    monkeypatch.setenv("CLEARBG_HOME", str(tmp_path))
    spec = get_spec("u2netp")
    tampered = dataclasses.replace(spec, weights=dataclasses.replace(spec.weights, sha256="0" * 64))
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        download(tampered)
    assert not list(tmp_path.rglob("*.pth"))


def test_download_is_skipped_when_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CLEARBG_HOME", str(tmp_path))
    spec = get_spec("u2netp")
    pth = download(spec)
    stamp = pth.stat().st_mtime_ns
    assert download(spec) == pth and pth.stat().st_mtime_ns == stamp
