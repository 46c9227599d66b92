"""A trained model as one self-describing ONNX file: fp32, fp16 or int8.

The graph is the inference path only: BatchNorm folded into the convs, the fused map ``d0``
through its sigmoid as the single output ``mask`` (B, 1, S, S), no side outputs. Its input
``image`` is (B, 3, S, S) float32, already scaled and normalised the way ``Predictor`` does it;
the file's ``metadata_props`` say how (``OnnxMetadata``), so ONNX Runtime here, in a browser or
in any other runtime can prepare photos without clearbg's registry.

Uses the TorchScript exporter (``dynamo=False``, opset 17): it needs only ``onnx``, while the
dynamo exporter needs ``onnxscript``; both match PyTorch to ~1e-6 here.

Variants:
    fp32: the exported graph (max abs diff to PyTorch fp32 ~3e-6).
    fp16: weights and compute in float16, inputs and outputs kept float32 (ONNX Runtime's own
        ``float16`` converter inserts the casts). Same IoU as fp32, half the file size; its
        speed depends on the CPU (bench/precision.py: about fp32's speed on an AVX512-FP16 host).
    int8: static QDQ quantisation (ONNX Runtime), per-channel int8 weights and uint8
        activations, calibrated on real photos; the few convs that int8 weights would break
        keep 16-bit weights (``fragile_convs``), and the first conv reads the photo in float32.
        See bench/precision.py for speed and IoU.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from clearbg.errors import ClearbgError
from clearbg.models.hub import resolve
from clearbg.models.onnx_metadata import (  # noqa: F401 (read_metadata: part of this module's API)
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    OnnxMetadata,
    read_metadata,
    set_metadata,
)
from clearbg.models.specs import ModelSpec

VARIANTS = ("fp32", "fp16", "int8")
OPSET = 17


class _MaskGraph(nn.Module):
    """The inference path only: sigmoid of the fused map, no side outputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image, fused_only=True)


def export_onnx(
    model: nn.Module,
    spec: ModelSpec,
    *,
    dynamic_batch: bool = False,
    precision: str = "fp32",
    calibration: Sequence[Image.Image] = (),
) -> "onnx.ModelProto":  # noqa: F821
    """Export a model to an in-memory ONNX ``ModelProto`` with clearbg metadata.

    Args:
        model: a clearbg model (``create_model``); it is copied, not modified.
        spec: its registry spec (input size, normalisation, name).
        dynamic_batch: free batch dimension ``N`` (else fixed at 1).
        precision: ``fp32`` | ``fp16`` | ``int8`` (see the module docstring).
        calibration: photos for ``int8`` (a handful of real, representative ones; 8-32).

    Returns:
        The model; ``proto.SerializeToString()`` or ``save_onnx`` writes it.

    Raises:
        ExportError: unknown precision, int8 without photos, or the exporter failed.

    Example:
        >>> from clearbg.models import create_model, get_spec
        >>> proto = export_onnx(create_model("u2netp", pretrained=False), get_spec("u2netp"))
        >>> [o.name for o in proto.graph.output]
        ['mask']
    """
    import onnx

    from clearbg.inference.optimize import fold_batchnorm

    if precision not in VARIANTS:
        raise ExportError(f"precision must be one of {VARIANTS}, got {precision!r}")
    if precision == "int8" and not calibration:
        raise ExportError("int8 export needs calibration photos (e.g. --calibration photos/)")
    graph = _MaskGraph(fold_batchnorm(copy.deepcopy(model).float().eval()))
    size = spec.input_size
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo, which needs onnxscript.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                graph, (torch.zeros(1, 3, size, size),), buffer, dynamo=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
            )
    except Exception as err:  # the exporter raises many kinds (TypeError, RuntimeError, ...)
        raise ExportError(f"ONNX export of {spec.name} failed: {err}") from err
    proto = onnx.load_from_string(buffer.getvalue())
    meta = OnnxMetadata(spec.name, spec.preprocess, precision, dynamic_batch)
    if precision == "fp16":
        proto = to_fp16(proto)
    elif precision == "int8":
        inputs = calibration_inputs(calibration, meta)
        fragile = fragile_convs(graph.model, inputs)
        proto = quantize_int8(proto, inputs, [f"model.{name}.weight" for name in fragile])
        meta = replace(meta, int16_weights=tuple(fragile))
    set_metadata(proto, meta)
    return proto


def to_fp16(proto: "onnx.ModelProto") -> "onnx.ModelProto":  # noqa: F821
    """Float16 weights and compute; float32 ``image`` in and ``mask`` out (casts at the edges).

    The sigmoid output of an fp16 graph differs from fp32 by up to ~0.1 at single pixels;
    thresholded masks agree to IoU > 0.99 on fashion photos (tests/test_onnx_export.py).
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(copy.deepcopy(proto), keep_io_types=True)


def read_calibration(sources: Sequence[str], count: int) -> tuple[list[Image.Image], list[str]]:
    """The first ``count`` readable photos under ``sources``, and why each unreadable one was skipped.

    One broken file in a folder of calibration photos is no reason to abort an export: it is
    skipped (and reported), and the next photo takes its place.

    Args:
        sources: photos or folders, local or s3://.
        count: how many good photos to return at most.

    Returns:
        (photos, skipped), where each ``skipped`` entry is the photo's error message (it names the file).

    Raises:
        ExportError: no readable photo at all (the message lists what was skipped).
        StorageError: a source does not exist or cannot be listed.

    Example:
        >>> photos, skipped = read_calibration(["photos/"], 16)  # doctest: +SKIP
    """
    from clearbg import imageio, storage

    photos: list[Image.Image] = []
    skipped: list[str] = []
    for ref in storage.iter_images(sources):
        if len(photos) >= count:
            break
        try:
            photos.append(imageio.open_image(storage.read_bytes(ref.uri), name=ref.uri))
        except ClearbgError as err:
            skipped.append(str(err))
    if not photos:
        found = f"; skipped {len(skipped)} unreadable: {'; '.join(skipped[:3])}" if skipped else ""
        raise ExportError(f"no readable calibration photo in {', '.join(sources)}{found}; "
                          "--int8 needs at least one (a handful of representative photos is best)")
    return photos, skipped


def calibration_inputs(photos: Iterable[Image.Image], meta: OnnxMetadata) -> list[np.ndarray]:
    """Photos prepared exactly as the engine prepares them: one (1, 3, S, S) float32 each."""
    pre = meta.preprocess
    return [pre.normalise(torch.from_numpy(pre.to_array(photo)[None]).permute(0, 3, 1, 2)).numpy() for photo in photos]


def fragile_convs(model: nn.Module, inputs: Sequence[np.ndarray], tolerance: float = 0.1) -> list[str]:
    """Convs whose output int8 weights would wreck: the names to keep at 16-bit weights.

    Each conv's weights are rounded alone to per-channel symmetric int8 (what ``quantize_int8``
    does) and applied to the conv's real input on the calibration photos; a conv is fragile when
    its output moves by more than ``tolerance`` (relative L2). On u2netp one conv,
    ``stage2d.rebnconv1d``, moves by 183 % (its folded weights cancel each other) while the
    median conv moves by 0.6 %; int8 weights there alone drop the mask IoU against fp32 to
    0.87. One forward pass, so it also finds the fragile convs of a fine-tuned model.

    Args:
        model: the BatchNorm-folded fp32 model the ONNX graph was exported from.
        inputs: calibration arrays from ``calibration_inputs``.
        tolerance: relative output error above which a conv is fragile.

    Returns:
        Module names (``stage2d.rebnconv1d.conv_s1``), most fragile first.
    """
    errors: dict[str, float] = {}

    def measure(name: str):
        def hook(conv: nn.Conv2d, args: tuple[torch.Tensor], out: torch.Tensor) -> None:
            weight = conv.weight
            scale = weight.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1) / 127
            rounded = torch.round(weight / scale) * scale
            moved = conv._conv_forward(args[0], rounded, conv.bias) - out
            errors[name] = max(errors.get(name, 0.0), float(moved.norm() / out.norm().clamp_min(1e-12)))
        return hook

    hooks = [m.register_forward_hook(measure(n)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            for item in inputs:
                model(torch.from_numpy(item), fused_only=True)
    finally:
        for hook in hooks:
            hook.remove()
    return sorted((n for n, e in errors.items() if e > tolerance), key=errors.get, reverse=True)


def quantize_int8(
    proto: "onnx.ModelProto", inputs: Sequence[np.ndarray], keep16: Sequence[str] = ()  # noqa: F821
) -> "onnx.ModelProto":  # noqa: F821
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on ``inputs``.

    Args:
        proto: an fp32 export (input ``image``).
        inputs: (1, 3, S, S) float32 arrays from ``calibration_inputs``.
        keep16: weight initialisers to quantise to int16 instead (``fragile_convs``).

    Returns:
        The quantised model: int8 weights (int16 for ``keep16``), uint8 activations (MinMax),
        except the convs that read the input, which stay float32: uint8 over the normalised
        photo's range (about -2.1..2.6) would re-quantise its pixel levels. On the val photos
        that raised the worst photo's mask agreement with fp32 from IoU 0.976 to 0.981, for
        about a tenth of its images/s.

    Leaving a fragile conv unquantised through ``nodes_to_exclude`` made u2netp far worse (mask
    IoU against fp32 0.34) in ONNX Runtime 1.32; a 16-bit override of its weight gives 0.996.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._items, None)
            return None if item is None else {INPUT_NAME: item}

    # ONNX Runtime logs on the root logger: "consider pre-processing" (quant_pre_process made no
    # difference to u2netp's accuracy or speed) and, with 16-bit weights, that it raises the
    # opset to 21 (which it then does correctly). Neither is news to a user; both are dropped.
    quiet = ("pre-processing before quantization", "does not support 16-bit integer quantization")
    advice = logging.Filter()
    advice.filter = lambda record: not any(text in record.getMessage() for text in quiet)
    logging.getLogger().addFilter(advice)
    # quantize_static works on files; a private temporary folder keeps them off the user's disk.
    try:
        with tempfile.TemporaryDirectory(prefix="clearbg-int8-") as tmp:
            src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
            onnx.save(proto, src)
            overrides = {name: [{"quant_type": QuantType.QInt16, "axis": 0}] for name in keep16}
            first = [node.name for node in proto.graph.node if INPUT_NAME in node.input]
            quantize_static(
                src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=first, extra_options={"TensorQuantOverrides": overrides},
            )
            return onnx.load(dst)
    finally:
        logging.getLogger().removeFilter(advice)


def save_onnx(proto: "onnx.ModelProto", out: str | Path) -> Path:  # noqa: F821
    """Write ``proto`` to ``out`` atomically (a reader never sees half a file).

    Example:
        >>> save_onnx(proto, "u2netp.onnx")  # doctest: +SKIP
        PosixPath('u2netp.onnx')
    """
    from clearbg.imageio import atomic_write_bytes

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, proto.SerializeToString())
    return out


def export_file(
    model: str | Path,
    out: str | Path,
    *,
    dynamic_batch: bool = False,
    precision: str = "fp32",
    calibration: Sequence[Image.Image] = (),
) -> Path:
    """``export_onnx`` for a registry name or checkpoint, written to ``out``.

    Args:
        model: any model reference the hub resolves to PyTorch weights (spec name,
            ``.pth``/``.pt`` checkpoint, official-layout ``.onnx``, ``models:/``, ``runs:/``).
        out: the ``.onnx`` file to write.
        dynamic_batch, precision, calibration: see ``export_onnx``.

    Returns:
        ``out`` as a Path.

    Example:
        >>> export_file("u2netp", "u2netp-int8.onnx", precision="int8", calibration=photos)  # doctest: +SKIP
        PosixPath('u2netp-int8.onnx')
    """
    found = resolve(model)
    if found.network is None:
        raise ExportError(f"{model} is already a clearbg ONNX export; export from the checkpoint it came from")
    proto = export_onnx(found.network, found.spec, dynamic_batch=dynamic_batch, precision=precision, calibration=calibration)
    return save_onnx(proto, out)
