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
        ``float16`` converter inserts the casts). Same IoU as fp32; on a CPU with AVX512-FP16
        2.8x ONNX Runtime fp32 at batch 1 (bench/onnx_speed.py); half the file size.
    int8: static QDQ quantisation (ONNX Runtime), per-channel int8 weights and uint8
        activations, calibrated on real photos. 1.5x (batch 1) to 2.5x (batch 8) ONNX Runtime
        fp32 on CPU, but it loses detail on u2netp (IoU against ground truth 0.83 instead of
        0.94; see ``quantize_int8``).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from clearbg.errors import ClearbgError
from clearbg.models.registry import ModelSpec

VARIANTS = ("fp32", "fp16", "int8")
INPUT_NAME = "image"
OUTPUT_NAME = "mask"
OPSET = 17
_PREFIX = "clearbg."


class ExportError(ClearbgError):
    """A model could not be exported to ONNX, or an ONNX file is not a clearbg export."""


@dataclass(frozen=True)
class OnnxMetadata:
    """What a runtime needs to feed a clearbg ONNX file, stored in its ``metadata_props``.

    Preparing a photo: resize it to ``input_size`` x ``input_size`` (bilinear, aspect not kept),
    RGB to float, divide by the photo's own maximum value, then ``(x - mean) / std`` per
    channel; NCHW. The output ``mask`` is the sigmoid probability; clearbg then stretches it
    min-max per image (the official test script's post-processing) and resizes to the photo.

    Attributes:
        model: registry name of the architecture and weights (``u2netp.official``).
        input_size: square side S of the input.
        mean, std: per-channel normalisation after the 0..1 scaling.
        variant: ``fp32`` | ``fp16`` | ``int8``.
        dynamic_batch: whether the batch dimension is free (else it is 1).
    """

    model: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    variant: str = "fp32"
    dynamic_batch: bool = False

    def to_props(self) -> dict[str, str]:
        """Key/value strings for ``metadata_props`` (keys prefixed ``clearbg.``)."""
        return {
            f"{_PREFIX}model": self.model,
            f"{_PREFIX}input_size": str(self.input_size),
            f"{_PREFIX}mean": json.dumps(list(self.mean)),
            f"{_PREFIX}std": json.dumps(list(self.std)),
            f"{_PREFIX}variant": self.variant,
            f"{_PREFIX}dynamic_batch": json.dumps(self.dynamic_batch),
            f"{_PREFIX}input": f"{INPUT_NAME}: float32 [N,3,S,S] RGB / per-image max, then (x - mean) / std",
            f"{_PREFIX}output": f"{OUTPUT_NAME}: float32 [N,1,S,S] sigmoid probability; min-max per image",
        }

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "ONNX file") -> OnnxMetadata:
        """Parse ``to_props`` output back.

        Raises:
            ExportError: the properties lack clearbg's keys (not exported by ``clearbg export``).
        """
        try:
            return cls(
                model=props[f"{_PREFIX}model"],
                input_size=int(props[f"{_PREFIX}input_size"]),
                mean=tuple(json.loads(props[f"{_PREFIX}mean"])),
                std=tuple(json.loads(props[f"{_PREFIX}std"])),
                variant=props.get(f"{_PREFIX}variant", "fp32"),
                dynamic_batch=json.loads(props.get(f"{_PREFIX}dynamic_batch", "false")),
            )
        except (KeyError, ValueError) as err:
            raise ExportError(
                f"{source} has no clearbg metadata ({err}); export it with "
                "`clearbg export --model NAME_OR_CHECKPOINT --out model.onnx`"
            ) from err


def read_metadata(model: str | Path | "onnx.ModelProto") -> OnnxMetadata:  # noqa: F821
    """The clearbg metadata of an ONNX file or ``ModelProto``.

    Raises:
        ExportError: not a clearbg export (no metadata) or not readable as ONNX.

    Example:
        >>> read_metadata("u2netp.onnx").input_size  # doctest: +SKIP
        320
    """
    import onnx

    if isinstance(model, onnx.ModelProto):
        proto, source = model, "ONNX model"
    else:
        try:
            proto, source = onnx.load(str(model), load_external_data=False), str(model)
        except Exception as err:  # onnx raises DecodeError, OSError, ... for a bad file
            raise ExportError(f"{model}: not a readable ONNX file ({err})") from err
    return OnnxMetadata.from_props({p.key: p.value for p in proto.metadata_props}, source)


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
        >>> from clearbg.models.registry import create_model, get_spec
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
    meta = OnnxMetadata(spec.name, size, tuple(spec.mean), tuple(spec.std), precision, dynamic_batch)
    if precision == "fp16":
        proto = to_fp16(proto)
    elif precision == "int8":
        proto = quantize_int8(proto, calibration_inputs(calibration, meta))
    set_metadata(proto, meta)
    return proto


def set_metadata(proto: "onnx.ModelProto", meta: OnnxMetadata) -> None:  # noqa: F821
    """Replace the clearbg entries of ``proto.metadata_props`` with ``meta``'s."""
    kept = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(_PREFIX)]
    del proto.metadata_props[:]
    for key, value in [*kept, *meta.to_props().items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "clearbg"


def to_fp16(proto: "onnx.ModelProto") -> "onnx.ModelProto":  # noqa: F821
    """Float16 weights and compute; float32 ``image`` in and ``mask`` out (casts at the edges).

    The sigmoid output of an fp16 graph differs from fp32 by up to ~0.1 at single pixels;
    thresholded masks agree to IoU > 0.99 on fashion photos (tests/test_onnx_export.py).
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(copy.deepcopy(proto), keep_io_types=True)


def calibration_inputs(photos: Iterable[Image.Image], meta: OnnxMetadata) -> list[np.ndarray]:
    """Photos prepared exactly as the engine prepares them: one (1, 3, S, S) float32 each."""
    from clearbg.inference.predictor import normalise_inputs, resize_for_model

    mean = torch.tensor(meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(meta.std).view(1, 3, 1, 1)
    return [
        normalise_inputs(torch.from_numpy(resize_for_model(photo, meta.input_size)[None]), mean, std).numpy()
        for photo in photos
    ]


def quantize_int8(proto: "onnx.ModelProto", inputs: Sequence[np.ndarray]) -> "onnx.ModelProto":  # noqa: F821
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on ``inputs``.

    Args:
        proto: an fp32 export (input ``image``).
        inputs: (1, 3, S, S) float32 arrays from ``calibration_inputs``.

    Returns:
        The quantised model: int8 weights, uint8 activations (MinMax calibration).

    Known limitation: on u2netp the masks agree with fp32 only to IoU ~0.73-0.92 per photo.
    ONNX Runtime's QDQ debugger (``qdq_loss_debug``) puts the first large error at
    ``stage2d.rebnconv1d``, whose folded conv has 8 near-dead channels (max |w| ~1e-5, output
    ~= bias) that stretch the per-tensor activation range. Tried without success: uint8 or
    int8 activations, reduce_range, Percentile calibration, float bias, excluding the
    decoder's or the side convs, ``quant_pre_process``. uint8 weights reach IoU ~0.95 but
    run slower than fp32. Next step: absorb the constant channels into the next layer's bias
    (or 16-bit activations for those tensors) before quantising.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._items, None)
            return None if item is None else {INPUT_NAME: item}

    # ONNX Runtime logs "consider pre-processing" on the root logger; quant_pre_process made no
    # difference to u2netp's accuracy or speed, so the advice is dropped, not shown to users.
    advice = logging.Filter()
    advice.filter = lambda record: "pre-processing before quantization" not in record.getMessage()
    logging.getLogger().addFilter(advice)
    # quantize_static works on files; a private temporary folder keeps them off the user's disk.
    try:
        with tempfile.TemporaryDirectory(prefix="clearbg-int8-") as tmp:
            src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
            onnx.save(proto, src)
            quantize_static(
                src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
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
        model: registry name (``u2netp``), ``.pth``/``.pt`` checkpoint, official-layout
            ``.onnx`` or MLflow model URI, as ``Predictor`` accepts.
        out: the ``.onnx`` file to write.
        dynamic_batch, precision, calibration: see ``export_onnx``.

    Returns:
        ``out`` as a Path.

    Example:
        >>> export_file("u2netp", "u2netp-int8.onnx", precision="int8", calibration=photos)  # doctest: +SKIP
        PosixPath('u2netp-int8.onnx')
    """
    from clearbg.inference.predictor import load_model

    module, spec = load_model(model)
    proto = export_onnx(module, spec, dynamic_batch=dynamic_batch, precision=precision, calibration=calibration)
    return save_onnx(proto, out)
