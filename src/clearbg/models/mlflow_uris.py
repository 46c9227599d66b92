"""Read-only access to models in MLflow: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
logged models ``models:/m-...`` and ``runs:/RUN_ID/PATH`` -> a local checkpoint, cached.

Writing to the registry (register, promote, rollback) is the ``clearbg.registry`` stage; this
module only reads, so everything that loads a model (the hub, the predictor, evaluation,
training's ``--init``) can resolve registry URIs without depending on that stage.

Every registered version carries a plain clearbg checkpoint (``clearbg.pt``: state dict + spec
name) beside MLflow's pytorch flavour, and usually its ONNX export (version tag ``clearbg.onnx``).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearbg.errors import RegistryError, UnknownModel
from clearbg.imageio import atomic_write_bytes
from clearbg.mlflow_store import mlflow_errors, open_store, using_tracking_uri
from clearbg.models.download import cache_dir
from clearbg.models.specs import ModelSpec, get_spec

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel
    from torch import nn

CHECKPOINT_FILE = "clearbg.pt"  # the plain checkpoint logged beside the pytorch flavour
ONNX_FILE = "model.onnx"  # what mlflow.onnx names the file inside its flavour folder
ONNX_TAG = "clearbg.onnx"  # version tag: URI of the version's ONNX export (onnx flavour)
CONFIDENCE_TAG = "clearbg.confidence"  # version tag: URI of the version's confidence calibration (JSON)
CONFIDENCE_FILE = "confidence.json"
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def is_mlflow_uri(name: Any) -> bool:
    """True for the MLflow model URIs clearbg loads: ``models:/...`` and ``runs:/...``.

    Example:
        >>> is_mlflow_uri("models:/shop@champion"), is_mlflow_uri("runs/a/best.pt")
        (True, False)
    """
    return isinstance(name, str) and name.startswith(("models:/", "runs:/"))


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split a registry URI into ``(name, alias, version)``; exactly one of the last two is set.

    Raises:
        UnknownModel: not ``models:/NAME@ALIAS`` nor ``models:/NAME/VERSION``.

    Example:
        >>> parse_model_uri("models:/shop@champion")
        ('shop', 'champion', None)
        >>> parse_model_uri("models:/shop/3")
        ('shop', None, '3')
    """
    match = _MODEL_URI.match(uri)
    if match is None:
        raise UnknownModel(f"{uri!r} is not a registry URI; expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return match["name"], match["alias"], match["version"]


def resolve_model_uri(uri: str, *, tracking_uri: str | None = None) -> Path:
    """A local clearbg checkpoint for an MLflow model URI, downloaded once and cached.

    The alias is looked up on every call (aliases move); the file is cached per store,
    registered model, version and source, so a promoted champion downloads once and a
    re-created model with a reused version number never gets a stale file. Cache:
    ``<clearbg cache>/registry/`` (``$CLEARBG_HOME``, else ``~/.cache/clearbg``).

    Args:
        uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, a logged model
            ``models:/m-...`` or ``runs:/RUN_ID/PATH`` (what training logs).
        tracking_uri: the store (default: :func:`resolve_tracking_uri`).

    Returns:
        Path of a ``.pt`` file that ``create_model`` / ``load_model_file`` load.

    Raises:
        UnknownModel: no such registered model, alias or version (the message lists the
            aliases that exist), or no store where one was expected.
        RegistryError: the store cannot be read.

    Example:
        >>> path = resolve_model_uri("models:/shop@champion")  # doctest: +SKIP
        >>> create_model(path)                                 # doctest: +SKIP
    """
    client, store_uri = open_store(tracking_uri, create=False)
    if _MODEL_URI.match(uri) and not _is_logged_model_id(uri):
        name, alias, version = parse_model_uri(uri)
        found = find_version(client, name, alias=alias, version=version, uri=store_uri)
        target = _cache_file(store_uri, f"{name}/{found.version}/{found.source}/{found.creation_timestamp}",
                             f"{name}-v{found.version}")
        if not target.is_file():
            _download_checkpoint(client, store_uri, name, found, target)
        return target
    if not is_mlflow_uri(uri):
        raise UnknownModel(f"{uri!r} is not an MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model)")
    target = _cache_file(store_uri, uri, re.sub(r"[^A-Za-z0-9_.-]+", "-", uri.split(":/", 1)[1])[:60])
    if not target.is_file():
        module = _load_pytorch_flavour(uri, store_uri)
        save_checkpoint(module, target, source=uri)
    return target


def resolve_onnx_uri(uri: str, *, tracking_uri: str | None = None) -> Path | None:
    """The ONNX export registered with ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``, cached.

    Returns:
        Path of a ``clearbg export`` ``.onnx`` file, or None when the version has none (registered
        with ``onnx=False`` or by hand) or ``uri`` is not a registered model's.

    Raises:
        UnknownModel: no such registered model, alias or version.
        RegistryError: the store cannot be read.

    Example:
        >>> Predictor(resolve_onnx_uri("models:/shop@champion"))  # doctest: +SKIP
    """
    if not _MODEL_URI.match(uri) or _is_logged_model_id(uri):
        return None
    import mlflow

    client, store_uri = open_store(tracking_uri, create=False)
    name, alias, version = parse_model_uri(uri)
    found = find_version(client, name, alias=alias, version=version, uri=store_uri)
    onnx_uri = (found.tags or {}).get(ONNX_TAG)
    if not onnx_uri:
        return None
    target = _cache_file(store_uri, f"{onnx_uri}", f"{name}-v{found.version}-onnx").with_name(ONNX_FILE)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
            with mlflow_errors(f"downloading {onnx_uri} ({uri})", store_uri), using_tracking_uri(store_uri):
                folder = mlflow.artifacts.download_artifacts(artifact_uri=onnx_uri, dst_path=tmp,
                                                             tracking_uri=store_uri, registry_uri=store_uri)
            os.replace(Path(folder) / ONNX_FILE, target)
    return target


def registered_version(uri: str, *, tracking_uri: str | None = None) -> str | None:
    """``models:/NAME/VERSION`` for a registered model's URI (an alias looked up now), else None.

    Example:
        >>> registered_version("models:/shop@champion")  # doctest: +SKIP
        'models:/shop/4'
    """
    if not _MODEL_URI.match(uri) or _is_logged_model_id(uri):
        return None
    client, store_uri = open_store(tracking_uri, create=False)
    name, alias, version = parse_model_uri(uri)
    return f"models:/{name}/{find_version(client, name, alias=alias, version=version, uri=store_uri).version}"


def resolve_confidence_uri(uri: str, *, tracking_uri: str | None = None) -> Path | None:
    """The confidence calibration registered with a model version (``clearbg register`` fits it
    on the dataset's validation split), downloaded once and cached.

    Returns:
        Path of its JSON file, or None when the version has none or ``uri`` is not a registered model's.

    Raises:
        UnknownModel: no such registered model, alias or version.
        RegistryError: the store cannot be read.
    """
    if not _MODEL_URI.match(uri) or _is_logged_model_id(uri):
        return None
    import mlflow

    client, store_uri = open_store(tracking_uri, create=False)
    name, alias, version = parse_model_uri(uri)
    found = find_version(client, name, alias=alias, version=version, uri=store_uri)
    artifact = (found.tags or {}).get(CONFIDENCE_TAG)
    if not artifact:
        return None
    target = _cache_file(store_uri, artifact, f"{name}-v{found.version}-confidence").with_name(CONFIDENCE_FILE)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
            with mlflow_errors(f"downloading {artifact} ({uri})", store_uri), using_tracking_uri(store_uri):
                path = mlflow.artifacts.download_artifacts(artifact_uri=artifact, dst_path=tmp,
                                                           tracking_uri=store_uri, registry_uri=store_uri)
            os.replace(path, target)
    return target


def _is_logged_model_id(uri: str) -> bool:
    # MLflow 3 names logged models models:/m-<32 hex>; a registered model is models:/NAME/... or @ALIAS.
    return re.fullmatch(r"models:/m-[0-9a-f]{32}", uri) is not None


def find_version(client: MlflowClient, name: str, *, alias: str | None, version: str | None, uri: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    registered = registered_model(client, name, uri)
    aliases = dict(registered.aliases or {})
    if alias is not None:
        if alias not in aliases:
            have = ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
            raise UnknownModel(
                f"models:/{name}@{alias}: registered model {name!r} has no alias {alias!r} "
                f"(its aliases: {have}); use one of them, or models:/{name}/VERSION"
            )
        version = str(aliases[alias])
    try:
        return client.get_model_version(name, version)
    except MlflowException as err:
        raise UnknownModel(f"registered model {name!r} has no version {version} in {uri}") from err


def registered_model(client: MlflowClient, name: str, uri: str) -> RegisteredModel:
    """The registered model ``name``; an unknown name lists the ones that exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"reading registered model {name!r} failed in {uri}: {err.message}") from err
        with mlflow_errors("listing registered models", uri):
            known = sorted(m.name for m in client.search_registered_models(max_results=100))
        raise UnknownModel(
            f"no registered model {name!r} in {uri}; registered models: {', '.join(known) or 'none'} "
            f"(create one with `clearbg register --model PATH --name {name} --data DATASET`)"
        ) from err


def _cache_file(store_uri: str, key: str, label: str) -> Path:
    digest = hashlib.sha256(f"{store_uri}\n{key}".encode()).hexdigest()[:12]
    return cache_dir() / "registry" / f"{label}-{digest}" / CHECKPOINT_FILE


def _download_checkpoint(client: MlflowClient, uri: str, name: str, version: ModelVersion, target: Path) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    target.parent.mkdir(parents=True, exist_ok=True)
    # Download beside the target, so the final rename is atomic (and never crosses filesystems).
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        try:
            with using_tracking_uri(uri):
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}/{version.version}/extra_files/{CHECKPOINT_FILE}",
                    dst_path=tmp, tracking_uri=uri, registry_uri=uri)
        except (MlflowException, OSError):
            # Registered without clearbg (e.g. by hand from a training run): the pytorch flavour only.
            module = _load_pytorch_flavour(f"models:/{name}/{version.version}", uri)
            save_checkpoint(module, target, source=f"models:/{name}/{version.version}")
            return
        os.replace(path, target)


def _load_pytorch_flavour(uri: str, store_uri: str) -> nn.Module:
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    try:
        with using_tracking_uri(store_uri):
            return mlflow.pytorch.load_model(uri, map_location="cpu")
    except MlflowException as err:
        raise UnknownModel(f"cannot load {uri} from the MLflow store {store_uri}: {err.message}") from err


def save_checkpoint(module: nn.Module, target: Path, *, source: str, spec: ModelSpec | None = None,
                    extra: Mapping[str, Any] | None = None) -> ModelSpec:
    """Write ``module`` as a plain clearbg checkpoint (state dict + spec name), atomically;
    returns the spec."""
    import torch

    from clearbg.models.weights import match_architecture

    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    spec = spec or get_spec(match_architecture(state, f"the weights of {source}"))
    buffer = io.BytesIO()
    torch.save({"model": state, "model_name": spec.name, "registered_from": source, **(extra or {})}, buffer)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, buffer.getvalue())
    return spec
