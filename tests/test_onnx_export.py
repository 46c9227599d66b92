"""ONNX export (fp32/fp16/int8) and the onnxruntime engine: parity with PyTorch on real photos.

u2netp is exported once per module, through the CLI; fp16 and int8 are derived from that
export (the same functions ``clearbg export --fp16/--int8`` call).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from clearbg.cli import cli
from clearbg.inference.onnx_engine import OrtNetwork
from clearbg.models.hub import is_onnx_export as is_clearbg_onnx
from clearbg.inference.onnx_export import (
    ExportError,
    OnnxMetadata,
    calibration_inputs,
    export_onnx,
    fragile_convs,
    read_metadata,
    set_metadata,
    to_fp16,
)
from clearbg.inference.optimize import fold_batchnorm
from clearbg.inference.predictor import Predictor
from clearbg.models import create_model, get_spec


@pytest.fixture(scope="module")
def photos(tiny_pairs) -> list[Image.Image]:
    """Five real fashion photos: two calibrate int8, three test every variant."""
    rows = [r for r in tiny_pairs if r["domain"] == "fashion"][:5]
    return [Image.open(r["image"]).convert("RGB") for r in rows]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> str:
    """u2netp exported by ``clearbg export --dynamic-batch`` (fp32)."""
    out = tmp_path_factory.mktemp("onnx") / "u2netp.onnx"
    result = CliRunner().invoke(cli, ["export", "--model", "u2netp", "--out", str(out), "--dynamic-batch"])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    return str(out)


@pytest.fixture(scope="module")
def torch_reference(photos) -> list[np.ndarray]:
    """Full-resolution maps of the PyTorch fp32 engine, the reference for every variant."""
    return Predictor("u2netp", device="cpu", precision="fp32", engine="torch").predict(photos[2:])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= 0.5, b >= 0.5
    return float((a & b).sum() / (a | b).sum())


def test_export_graph_and_metadata(exported):
    proto = onnx.load(exported)
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["mask"]  # fused map only, no side outputs
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 320, 320]
    assert not [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    assert proto.graph.node[-1].op_type == "Sigmoid"
    spec = get_spec("u2netp")
    assert read_metadata(exported) == OnnxMetadata(spec.name, spec.preprocess, "fp32", True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["clearbg.mean"] == "[0.485, 0.456, 0.406]"  # JSON, readable from JavaScript too
    assert is_clearbg_onnx(exported)


def test_fp32_matches_pytorch(exported, photos, torch_reference):
    # The network alone, on a real batch of 3 (dynamic batch): max abs diff < 1e-4.
    meta = read_metadata(exported)
    x = np.concatenate(calibration_inputs(photos[2:], meta))
    model = fold_batchnorm(create_model("u2netp").eval())
    with torch.no_grad():
        expected = model(torch.from_numpy(x), fused_only=True).numpy()
    got = OrtNetwork(exported)(x)
    assert got.shape == (3, 1, 320, 320) and got.dtype == np.float32
    assert float(np.abs(got - expected).max()) < 1e-4
    # The whole Predictor path: a clearbg .onnx picks onnxruntime by itself (engine="auto").
    predictor = Predictor(exported)
    assert (predictor.engine, predictor.precision, predictor.input_size) == ("onnxruntime", "fp32", 320)
    maps = predictor.predict(photos[2:])
    for got_map, want, photo in zip(maps, torch_reference, photos[2:]):
        assert got_map.shape == (photo.height, photo.width)
        assert np.abs(got_map - want).max() < 1e-3
        assert iou(got_map, want) > 0.999


def test_engine_from_registry_name_exports_in_memory(photos, torch_reference):
    predictor = Predictor("u2netp", engine="onnxruntime", precision="fp32", batch_size=1)
    assert predictor.engine == "onnxruntime" and predictor.precision == "fp32"
    [got] = predictor.predict(photos[2:3])
    assert np.abs(got - torch_reference[0]).max() < 1e-3
    with pytest.raises(ExportError, match="fp32, fp16 or int8"):
        Predictor("u2netp", engine="onnxruntime", precision="bf16")


def test_fixed_batch_export_runs_batches_one_by_one(photos):
    proto = export_onnx(create_model("u2netp"), get_spec("u2netp"))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    network = OrtNetwork(proto)
    x = np.concatenate(calibration_inputs(photos[:2], network.metadata))
    both = network(x)
    assert both.shape == (2, 1, 320, 320)
    assert np.allclose(both[1:], network(x[1:]), atol=1e-6)


def test_fp16_parity(exported, photos, torch_reference, tmp_path):
    proto = to_fp16(onnx.load(exported))
    set_metadata(proto, replace(read_metadata(exported), variant="fp16"))
    weights = [t for t in proto.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # casts inside
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    onnx.save(proto, tmp_path / "fp16.onnx")
    predictor = Predictor(tmp_path / "fp16.onnx")
    assert (predictor.engine, predictor.precision) == ("onnxruntime", "fp16")
    for got, want in zip(predictor.predict(photos[2:]), torch_reference):
        assert iou(got, want) >= 0.98


def test_fragile_conv_found_on_u2netp(photos):
    # The one conv whose folded weights cancel: int8 weights alone move its output by >100 %.
    model = fold_batchnorm(create_model("u2netp").float().eval())
    meta = OnnxMetadata("u2netp", get_spec("u2netp").preprocess)
    assert fragile_convs(model, calibration_inputs(photos[:1], meta)) == ["stage2d.rebnconv1d.conv_s1"]


def test_int8_static_quantisation(exported, photos, torch_reference, tmp_path):
    proto = export_onnx(create_model("u2netp"), get_spec("u2netp"), dynamic_batch=True, precision="int8",
                        calibration=photos[:2])
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    weights = {t.name.removesuffix("_quantized"): t.data_type for t in proto.graph.initializer if len(t.dims) == 4}
    assert weights.pop("model.stage2d.rebnconv1d.conv_s1.weight") == onnx.TensorProto.INT16  # the fragile one
    assert weights.pop("model.stage1.rebnconvin.conv_s1.weight") == onnx.TensorProto.FLOAT  # reads the photo
    assert len(weights) == 117 and set(weights.values()) == {onnx.TensorProto.INT8}  # every other conv
    assert len(proto.SerializeToString()) < 0.45 * len(onnx.load(exported).SerializeToString())
    assert read_metadata(proto).int16_weights == ("stage2d.rebnconv1d.conv_s1",)  # said in the file
    onnx.save(proto, tmp_path / "int8.onnx")
    predictor = Predictor(tmp_path / "int8.onnx")
    assert (predictor.engine, predictor.precision) == ("onnxruntime", "int8")
    ious = [iou(got, want) for got, want in zip(predictor.predict(photos[2:]), torch_reference)]
    # With the fragile conv at int8 this was ~0.8; with its 16-bit weights ~0.99.
    assert min(ious) >= 0.97, ious


def test_cli_remove_with_engine_and_errors(exported, photos, tmp_path):
    photo = tmp_path / "p.jpg"
    photos[2].save(photo)
    runner = CliRunner()
    result = runner.invoke(cli, ["remove", str(photo), "--out", str(tmp_path / "out"), "--model", exported, "--mask"])
    assert result.exit_code == 0, result.output
    mask = np.asarray(Image.open(tmp_path / "out" / "p.png"))
    assert mask.shape == (photos[2].height, photos[2].width) and 0.05 < (mask >= 128).mean() < 0.9
    both = runner.invoke(cli, ["export", "--out", str(tmp_path / "x.onnx"), "--fp16", "--int8"])
    assert both.exit_code != 0 and "one of --fp16 and --int8" in both.output
    nocal = runner.invoke(cli, ["export", "--out", str(tmp_path / "x.onnx"), "--int8"])
    assert nocal.exit_code != 0 and "--calibration" in nocal.output
    assert not (tmp_path / "x.onnx").exists()


def test_int8_calibration_skips_unreadable_photos_and_says_so(photos, tmp_path):
    folder = tmp_path / "cal"
    folder.mkdir()
    photos[0].resize((64, 96)).save(folder / "a.jpg")
    (folder / "b.jpg").write_bytes((folder / "a.jpg").read_bytes()[:100])  # truncated
    runner = CliRunner()
    args = ["export", "--model", "u2netp", "--int8", "--calibration", str(folder)]
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "q.onnx")])
    assert result.exit_code == 0, result.output
    assert "skipped calibration photo" in result.output and "b.jpg" in result.output
    assert "calibrated on 1 photos" in result.output
    (folder / "a.jpg").unlink()
    none = runner.invoke(cli, [*args, "--out", str(tmp_path / "r.onnx")])
    assert none.exit_code != 0 and "no readable calibration photo" in none.output and "b.jpg" in none.output
