"""The metadata a clearbg ONNX export carries: which model, and how to feed it.

A ``clearbg export`` file is self-describing: its ``metadata_props`` hold the model's name and
its preprocessing contract, so ONNX Runtime here, a browser or any other runtime can prepare
photos without clearbg's spec table. Reading it is part of resolving a model reference (the
hub), so it lives here, below the exporter in ``clearbg.inference.onnx_export``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from clearbg.errors import ClearbgError
from clearbg.models.preprocess import Preprocess

INPUT_NAME = "image"
OUTPUT_NAME = "mask"
_PREFIX = "clearbg."


INPUT_NAME = "image"
OUTPUT_NAME = "mask"
_PREFIX = "clearbg."


class ExportError(ClearbgError):
    """A model could not be exported to ONNX, or an ONNX file is not a clearbg export."""


@dataclass(frozen=True)
class OnnxMetadata:
    """What a runtime needs to feed a clearbg ONNX file, stored in its ``metadata_props``.

    Preparing a photo: the model's :class:`~clearbg.models.preprocess.Preprocess` (by default:
    resize it to S x S, bilinear, aspect not kept; RGB to float, divide by the photo's own
    maximum value, then ``(x - mean) / std`` per channel; NCHW). The output ``mask`` is the sigmoid probability; clearbg then stretches it
    min-max per image (the official test script's post-processing) and resizes to the photo.

    Attributes:
        model: registry name of the architecture and weights (``u2netp.official``).
        preprocess: how a photo becomes the input (size S, resize mode, normalisation).
        variant: ``fp32`` | ``fp16`` | ``int8``.
        dynamic_batch: whether the batch dimension is free (else it is 1).
        int16_weights: for int8, the convs kept at 16-bit weights (``fragile_convs``).
    """

    model: str
    preprocess: Preprocess
    variant: str = "fp32"
    dynamic_batch: bool = False
    int16_weights: tuple[str, ...] = ()

    @property
    def input_size(self) -> int:
        return self.preprocess.size

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.preprocess.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.preprocess.std

    def to_props(self) -> dict[str, str]:
        """Key/value strings for ``metadata_props`` (keys prefixed ``clearbg.``)."""
        return {
            f"{_PREFIX}model": self.model,
            f"{_PREFIX}input_size": str(self.input_size),
            f"{_PREFIX}mean": json.dumps(list(self.mean)),
            f"{_PREFIX}std": json.dumps(list(self.std)),
            f"{_PREFIX}resize": self.preprocess.resize,
            f"{_PREFIX}interpolation": self.preprocess.interpolation,
            f"{_PREFIX}variant": self.variant,
            f"{_PREFIX}dynamic_batch": json.dumps(self.dynamic_batch),
            f"{_PREFIX}int16_weights": json.dumps(list(self.int16_weights)),
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
                preprocess=Preprocess(
                    size=int(props[f"{_PREFIX}input_size"]),
                    resize=props.get(f"{_PREFIX}resize", "stretch"),
                    interpolation=props.get(f"{_PREFIX}interpolation", "bilinear"),
                    mean=tuple(json.loads(props[f"{_PREFIX}mean"])),
                    std=tuple(json.loads(props[f"{_PREFIX}std"])),
                ),
                variant=props.get(f"{_PREFIX}variant", "fp32"),
                dynamic_batch=json.loads(props.get(f"{_PREFIX}dynamic_batch", "false")),
                int16_weights=tuple(json.loads(props.get(f"{_PREFIX}int16_weights", "[]"))),
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


def set_metadata(proto: "onnx.ModelProto", meta: OnnxMetadata) -> None:  # noqa: F821
    """Replace the clearbg entries of ``proto.metadata_props`` with ``meta``'s."""
    kept = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(_PREFIX)]
    del proto.metadata_props[:]
    for key, value in [*kept, *meta.to_props().items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "clearbg"
