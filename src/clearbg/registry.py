"""The MLflow Model Registry for clearbg: register, promote by a paired gate, load ``models:/``.

Versions of a registered model (``shop``) are told apart by aliases, never by the deprecated
stages:

* ``challenger``: set by :func:`register_model` on the version it creates;
* ``champion``: what serves (``clearbg remove --model models:/shop@champion``); moved only by
  :func:`promote` when the challenger passes the gate of :mod:`clearbg.evaluate.compare`;
* ``previous-champion``: the champion before the last promotion, so :func:`rollback` is one call.

Every version carries its evaluation: summary figures as version tags and run metrics, the
per-image table, thumbnails and ``report.html`` as artifacts of the run that registered it. The
model is logged with MLflow's pytorch flavour (pickled, so photos of any size go through) and,
beside it, a plain clearbg checkpoint (``clearbg.pt``: state dict + spec name) that
``create_model("models:/shop@champion")`` loads without unpickling code. The same run also logs
its fp32 ONNX export (dynamic batch) with MLflow's onnx flavour; the version's ``clearbg.onnx`` tag
points at it, and ``Predictor("models:/shop@champion", engine="onnxruntime")`` runs that file
(:func:`resolve_onnx_uri`).

The store is the one training uses (:func:`clearbg.mlflow_store.resolve_tracking_uri`): an
explicit URI, else ``MLFLOW_TRACKING_URI``, else the embedded ``sqlite:///<abs runs>/mlflow.db``.

Example:
    >>> reg = register_model("runs/exp1/checkpoints/best.pt", "shop", "data/fashion:test")  # doctest: +SKIP
    >>> result = promote("shop", "data/fashion:test")                                          # doctest: +SKIP
    >>> print(result.table())                                                                 # doctest: +SKIP
    >>> model = create_model("models:/shop@champion")                                         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearbg.errors import ClearbgError, UnknownModel
from clearbg.mlflow_store import (
    connect,
    experiment_id,
    is_off,
    log_metrics,
    log_onnx_model,
    log_params,
    log_pytorch_model,
    metric_key,
    resolve_tracking_uri,
    sqlite_path,
    using_tracking_uri,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel
    from torch import nn

    from clearbg.evaluate.compare import Decision
    from clearbg.evaluate.run import Evaluation
    from clearbg.models.registry import ModelSpec

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
CHECKPOINT_FILE = "clearbg.pt"  # the plain checkpoint logged beside the pytorch flavour
ONNX_FILE = "model.onnx"  # what mlflow.onnx names the file inside its flavour folder
ONNX_TAG = "clearbg.onnx"  # version tag: URI of the version's ONNX export (onnx flavour)
EVALUATION_ARTIFACTS = "evaluation"  # run artifact folder of a version's evaluation
REGISTER_EXPERIMENT = "clearbg-register"
PROMOTE_EXPERIMENT = "clearbg-promote"
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")

log = logging.getLogger(__name__)


class RegistryError(ClearbgError):
    """The model registry could not do what was asked (store unreachable, bad name, no alias ...)."""


# --------------------------------------------------------------------------- the store


# Every command reads the environment variable, while only some have --tracking-uri (remove, batch,
# serve and export load models:/ URIs too and do not), so the advice names the variable.
_STORE_HINT = "set MLFLOW_TRACKING_URI (e.g. MLFLOW_TRACKING_URI=sqlite:///path/to/runs/mlflow.db)"


def _store(tracking_uri: str | None, *, create: bool) -> tuple[MlflowClient, str]:
    """A client on the resolved store. Reading from a default SQLite file that does not exist
    fails with advice instead of silently creating an empty store."""
    uri = resolve_tracking_uri(tracking_uri)
    if is_off(uri):
        raise RegistryError(f"tracking URI {uri!r} turns MLflow off, but the model registry lives in MLflow; "
                            f"give a store: {_STORE_HINT}")
    db = sqlite_path(uri)
    if db is not None and not create and not db.is_file():
        raise UnknownModel(
            f"no MLflow store at {db} (from {uri}); run from the folder you trained or registered in "
            f"(the store is runs/mlflow.db there), or {_STORE_HINT}"
        )
    return connect(uri), uri


@contextlib.contextmanager
def _mlflow_errors(what: str, uri: str) -> Iterator[None]:
    """Turn MLflow's exceptions into ours, naming what was being done and where."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        raise RegistryError(f"{what} failed in the MLflow store {uri}: {err.message}") from err


# --------------------------------------------------------------------------- models:/ URIs


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
    client, store_uri = _store(tracking_uri, create=False)
    if _MODEL_URI.match(uri) and not _is_logged_model_id(uri):
        name, alias, version = parse_model_uri(uri)
        found = _find_version(client, name, alias=alias, version=version, uri=store_uri)
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
        _save_checkpoint(module, target, source=uri)
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

    client, store_uri = _store(tracking_uri, create=False)
    name, alias, version = parse_model_uri(uri)
    found = _find_version(client, name, alias=alias, version=version, uri=store_uri)
    onnx_uri = (found.tags or {}).get(ONNX_TAG)
    if not onnx_uri:
        return None
    target = _cache_file(store_uri, f"{onnx_uri}", f"{name}-v{found.version}-onnx").with_name(ONNX_FILE)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
            with _mlflow_errors(f"downloading {onnx_uri} ({uri})", store_uri), using_tracking_uri(store_uri):
                folder = mlflow.artifacts.download_artifacts(artifact_uri=onnx_uri, dst_path=tmp,
                                                             tracking_uri=store_uri, registry_uri=store_uri)
            os.replace(Path(folder) / ONNX_FILE, target)
    return target


def _is_logged_model_id(uri: str) -> bool:
    # MLflow 3 names logged models models:/m-<32 hex>; a registered model is models:/NAME/... or @ALIAS.
    return re.fullmatch(r"models:/m-[0-9a-f]{32}", uri) is not None


def _find_version(client: MlflowClient, name: str, *, alias: str | None, version: str | None, uri: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    registered = _registered(client, name, uri)
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


def _registered(client: MlflowClient, name: str, uri: str) -> RegisteredModel:
    """The registered model ``name``; an unknown name lists the ones that exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"reading registered model {name!r} failed in {uri}: {err.message}") from err
        with _mlflow_errors("listing registered models", uri):
            known = sorted(m.name for m in client.search_registered_models(max_results=100))
        raise UnknownModel(
            f"no registered model {name!r} in {uri}; registered models: {', '.join(known) or 'none'} "
            f"(create one with `clearbg register --model PATH --name {name} --data DATASET`)"
        ) from err


def _cache_file(store_uri: str, key: str, label: str) -> Path:
    from clearbg.models.download import cache_dir

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
            _save_checkpoint(module, target, source=f"models:/{name}/{version.version}")
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


def _save_checkpoint(module: nn.Module, target: Path, *, source: str, spec: ModelSpec | None = None,
                     extra: Mapping[str, Any] | None = None) -> ModelSpec:
    """Write ``module`` as a plain clearbg checkpoint (state dict + spec name); returns the spec."""
    from clearbg.models.registry import get_spec
    from clearbg.models.weights import match_architecture
    from clearbg.train.checkpoint import save_checkpoint

    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    spec = spec or get_spec(match_architecture(state, f"the weights of {source}"))
    save_checkpoint(target, {"model": state, "model_name": spec.name, "registered_from": source, **(extra or {})})
    return spec


# --------------------------------------------------------------------------- register


@dataclass(frozen=True)
class Registration:
    """A model version just registered, with its evaluation.

    Attributes:
        name, version: the registered model and the new version (a string, as MLflow has it).
        alias: the alias set on it (``challenger`` by default).
        model_uri: ``models:/NAME/VERSION``.
        run_id: the MLflow run that holds the model and its evaluation.
        source: what was registered, as given (path, registry name, ``runs:/...``).
        spec: the clearbg model spec its weights fit (``u2netp.official`` ...).
        evaluation: the evaluation attached to it.
        tracking_uri: the store.
    """

    name: str
    version: str
    alias: str
    model_uri: str
    run_id: str
    source: str
    spec: str
    evaluation: Evaluation
    tracking_uri: str


def register_model(
    model: str | os.PathLike,
    name: str,
    data: str | None = None,
    *,
    alias: str = CHALLENGER,
    tracking_uri: str | None = None,
    evaluation: Evaluation | None = None,
    device: str | None = None,
    precision: str = "fp32",
    threshold: float = 0.5,
    boundary_tolerance: int = 3,
    limit: int | None = None,
    progress: bool | None = None,
    description: str | None = None,
    onnx: bool = True,
) -> Registration:
    """Evaluate a model and register it as a new version of ``name`` with the alias ``alias``.

    Args:
        model: a checkpoint (``runs/x/checkpoints/best.pt``, ``.pth``, ``.onnx``), a registry
            name (``u2netp``: the official weights), or an MLflow URI (``runs:/RUN_ID/model``
            logged by training, ``models:/m-...``, another registered ``models:/NAME@ALIAS``).
        name: the registered model (created on first use), e.g. ``shop``.
        data: the held-out set, ``DATASET[:split]`` (default split ``test``).
        alias: set on the new version; ``challenger`` is what ``promote`` compares.
        tracking_uri: the store (default: :func:`resolve_tracking_uri`).
        evaluation: an evaluation of this very model made already (e.g. saved by
            ``clearbg evaluate --out``); skips evaluating again.
        device, precision, threshold, boundary_tolerance, limit, progress: passed to
            :func:`clearbg.evaluate.run.evaluate_model`.
        description: the version's description in the registry.
        onnx: also log the fp32 ONNX export (onnx flavour) and tag the version with its URI.

    Returns:
        The :class:`Registration`.

    Raises:
        UnknownModel, CheckpointMismatch, WeightsNotFound: the model cannot be loaded.
        RegistryError: no data and no evaluation, or the store refused a write.
        ClearbgError: the evaluation failed (dataset problems).

    Example:
        >>> reg = register_model("runs/exp1/checkpoints/best.pt", "shop", "data/fashion:test")  # doctest: +SKIP
        >>> reg.model_uri, reg.evaluation.summary()["overall"]["iou_mean"]                       # doctest: +SKIP
        ('models:/shop/4', 0.9412)
    """
    from clearbg.evaluate.report import write_report
    from clearbg.evaluate.tracking import log_evaluation

    if evaluation is None and data is None:
        raise RegistryError(f"registering {model} needs a held-out set to evaluate it on (data=DATASET[:split])")
    client, uri = _store(tracking_uri, create=True)
    source = str(model)
    with tempfile.TemporaryDirectory(prefix="clearbg-register-") as tmp:
        checkpoint = Path(tmp) / CHECKPOINT_FILE
        module, spec = _load_source(source, uri, checkpoint)
        if evaluation is None:
            from clearbg.evaluate.run import evaluate_model

            evaluation = evaluate_model(str(checkpoint), data, device=device, precision=precision, threshold=threshold,
                                        boundary_tolerance=boundary_tolerance, limit=limit, progress=progress,
                                        name=source)
        folder = Path(tmp) / EVALUATION_ARTIFACTS
        write_report([evaluation], folder, title=f"{name}: {source} on {evaluation.data}")
        with _mlflow_errors(f"registering {source} as {name}", uri):
            experiment = experiment_id(client, REGISTER_EXPERIMENT)
            run = client.create_run(experiment, run_name=f"register {name}", tags={"clearbg.source": source})
            run_id = run.info.run_id
            try:
                log_params(client, run_id, {
                    "name": name, "alias": alias, "source": source, "spec": spec.name, "data": evaluation.data,
                    "eval": {k: v for k, v in evaluation.settings.items() if k not in ("seconds", "images_per_s")},
                })
                # The files (report.html, summary.json, per_image.csv ...) and the figures as
                # metrics, named as `clearbg evaluate` names them.
                log_evaluation(folder, run_id=run_id, tracking_uri=uri, artifact_path=EVALUATION_ARTIFACTS)
                model_uri = log_pytorch_model(client, experiment, run_id, module.cpu().eval(), extra_files=[checkpoint])
                tags = _version_tags(source, spec.name, evaluation)
                if onnx:
                    from clearbg.inference.onnx_export import export_onnx

                    tags[ONNX_TAG] = log_onnx_model(client, experiment, run_id, export_onnx(module, spec, dynamic_batch=True))
                version = _create_version(client, name, model_uri, run_id, description or f"{spec.name} from {source}", tags)
                client.set_registered_model_alias(name, alias, version)
            except BaseException:
                client.set_terminated(run_id, status="FAILED")
                raise
            client.set_terminated(run_id, status="FINISHED")
    return Registration(name=name, version=version, alias=alias, model_uri=f"models:/{name}/{version}", run_id=run_id,
                        source=source, spec=spec.name, evaluation=evaluation, tracking_uri=uri)


def _load_source(source: str, uri: str, checkpoint: Path) -> tuple[nn.Module, ModelSpec]:
    """Load what is being registered and write it as a plain clearbg checkpoint."""
    from clearbg.models.registry import create_model, get_spec, is_checkpoint_path
    from clearbg.models.weights import load_model_file

    extra: dict[str, Any] = {}
    if is_mlflow_uri(source) or is_checkpoint_path(source):
        path = resolve_model_uri(source, tracking_uri=uri) if is_mlflow_uri(source) else Path(source)
        module, arch = load_model_file(path)
        spec, extra = get_spec(arch), _provenance(path)
    else:
        spec = get_spec(source)
        module = create_model(spec.name)
    _save_checkpoint(module, checkpoint, source=source, spec=spec, extra=extra)
    return module.eval(), spec


def _provenance(path: Path) -> dict[str, Any]:
    """What a training checkpoint says about itself (config, epoch, metrics), to keep with the weights."""
    if path.suffix not in (".pt", ".pth"):
        return {}
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unusual layout still loaded as weights above; its metadata is optional
        return {}
    if not isinstance(payload, dict):
        return {}
    return {k: payload[k] for k in ("config", "epoch", "step", "metrics") if k in payload}


def _create_version(client: MlflowClient, name: str, model_uri: str, run_id: str, description: str,
                    tags: Mapping[str, str]) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="clearbg background-removal model")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # MLflow's SQL registry looks the logged model up through the fluent API's store: point it here.
    with using_tracking_uri(client.tracking_uri):
        return str(client.create_model_version(name, model_uri, run_id=run_id, tags=dict(tags),
                                               description=description).version)


def _version_tags(source: str, spec: str, evaluation: Evaluation) -> dict[str, str]:
    summary = evaluation.summary()
    tags = {"clearbg.source": source, "clearbg.spec": spec, "eval.data": evaluation.data,
            "eval.n": str(summary["n"]), "eval.key": evaluation_key(evaluation.data, evaluation.settings)}
    for key in ("iou_mean", "iou_median", "iou_pooled", "dice_mean", "boundary_f_mean", "share_iou_95",
                "share_iou_97", "share_iou_99"):
        if key in summary["overall"]:
            tags[f"eval.{key}"] = f"{summary['overall'][key]:.4f}"
    for group, figures in summary["groups"].items():
        tags[metric_key(f"eval.group.{group}.iou_mean")] = f"{figures['iou_mean']:.4f}"
    return tags


# --------------------------------------------------------------------------- evaluations of versions


def evaluation_key(data: str, settings: Mapping[str, Any]) -> str:
    """A fingerprint of what an evaluation measured: the dataset's manifest and options, the
    split, the image limit and the scoring settings. Two evaluations with the same key scored
    the same images the same way, so ``promote`` may reuse the one made at registration.

    Args:
        data: ``DATASET:split`` as in ``Evaluation.data``.
        settings: ``threshold``, ``boundary_tolerance``, ``precision``, ``device``, ``limit``
            (``Evaluation.settings`` or a request).

    Returns:
        A hex digest; ``""`` when the dataset cannot be read (never reused then).

    Example:
        >>> evaluation_key("data/fashion:test", {"threshold": 0.5, "precision": "fp32", "device": "cpu"})  # doctest: +SKIP
        '3f1c...'
    """
    import torch

    from clearbg import storage
    from clearbg.data.manifest import DATASET_INFO, read_manifest
    from clearbg.evaluate.run import parse_data_arg

    dataset, split = parse_data_arg(data)
    try:
        manifest = read_manifest(dataset)
        info_uri = storage.join(dataset, DATASET_INFO)
        info = storage.read_bytes(info_uri) if storage.exists(info_uri) else b""
    except (OSError, ClearbgError):
        return ""
    import clearbg
    from clearbg.inference.predictor import default_precision

    device = torch.device(settings.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = settings.get("precision") or "auto"

    fields = {
        "manifest": hashlib.sha256(manifest.sort_values("id").to_csv(index=False).encode()).hexdigest(),
        "info": hashlib.sha256(info).hexdigest(),
        "split": split,
        "limit": settings.get("limit"),
        "threshold": float(settings.get("threshold", 0.5)),
        "boundary_tolerance": int(settings.get("boundary_tolerance", 3)),
        "precision": default_precision(device) if precision == "auto" else precision,
        "device": device.type,
        "clearbg": getattr(clearbg, "__version__", "unknown"),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _evaluate_version(client: MlflowClient, uri: str, name: str, version: ModelVersion, role: str, data: str,
                      request: dict[str, Any], fresh: bool, progress: bool | None) -> tuple[Evaluation, bool]:
    """The version's evaluation on ``data``: the one attached at registration when it measured
    exactly the same thing (same key), else a new one. Returns (evaluation, reused)."""
    from mlflow.exceptions import MlflowException

    from clearbg.evaluate.run import Evaluation, evaluate_model

    label = f"{role} v{version.version}"  # short: it heads table columns and names report folders
    wanted = evaluation_key(data, request)
    if not fresh and wanted and (version.tags or {}).get("eval.key") == wanted and version.run_id:
        with tempfile.TemporaryDirectory(prefix="clearbg-eval-") as tmp:
            try:
                with using_tracking_uri(uri):
                    folder = client.download_artifacts(version.run_id, EVALUATION_ARTIFACTS, tmp)
                evaluation = Evaluation.load(folder)
            except (OSError, ClearbgError, MlflowException) as err:
                log.warning("the evaluation stored with %s cannot be read (%s); evaluating again", label, err)
            else:
                evaluation.model = label
                return evaluation, True
    checkpoint = resolve_model_uri(f"models:/{name}/{version.version}", tracking_uri=uri)
    evaluation = evaluate_model(str(checkpoint), data, name=label, progress=progress, **request)
    return evaluation, False


# --------------------------------------------------------------------------- promote


@dataclass(frozen=True)
class Promotion:
    """The outcome of :func:`promote`.

    Attributes:
        name: the registered model.
        decision: the gate's :class:`~clearbg.evaluate.compare.Decision` (``promote``, reasons, rows).
        champion_version: the champion compared against (None: there was none).
        challenger_version: the challenger compared.
        champion: the version the ``champion`` alias points to now.
        run_id: the ``clearbg-promote`` run that records it all.
        data: ``DATASET:split`` both were scored on.
        reused: role -> whether the evaluation attached at registration was reused.
        evaluations: role -> the :class:`Evaluation` (``"champion"``, ``"challenger"``).
    """

    name: str
    decision: Decision
    champion_version: str | None
    challenger_version: str
    champion: str
    run_id: str
    data: str
    reused: dict[str, bool]
    evaluations: dict[str, Evaluation]

    @property
    def promoted(self) -> bool:
        return self.decision.promote

    def table(self) -> str:
        """What ``clearbg promote`` prints: the comparison table, the decision and what moved."""
        challenger = f"challenger v{self.challenger_version}"
        n = len(self.evaluations[CHALLENGER].per_image)
        if self.champion_version is None:
            head = f"{self.name}: {challenger} on {self.data} ({n} images); no champion yet"
            iou = self.evaluations[CHALLENGER].per_image["iou"]
            body = f"{challenger}: mean IoU {iou.mean():.4f}, IoU >= 95 % on {(iou >= 0.95).mean():.1%}\n" + self.decision.table()
        else:
            head = f"{self.name}: champion v{self.champion_version} vs {challenger} on {self.data} ({n} images, paired)"
            body = self.decision.table(f"champion v{self.champion_version}", challenger)
        reused = [role for role, flag in self.reused.items() if flag]
        lines = [head]
        if reused:
            lines.append(f"(reused the evaluation stored at registration for: {', '.join(reused)}; --fresh re-evaluates)")
        lines.append(body)
        if self.promoted:
            moved = f"champion -> v{self.champion}"
            if self.champion_version is not None:
                moved += (f", {PREVIOUS_CHAMPION} -> v{self.champion_version} "
                          f"(roll back with: clearbg promote --name {self.name} --rollback)")
            lines.append(moved)
        else:
            lines.append(f"champion stays v{self.champion}; the challenger keeps its alias")
        lines.append(f"recorded in MLflow run {self.run_id} (experiment {PROMOTE_EXPERIMENT})")
        return "\n".join(lines)


def promote(
    name: str,
    data: str,
    *,
    margin: float = 0.005,
    tolerance: float = 0.01,
    tracking_uri: str | None = None,
    fresh: bool = False,
    device: str | None = None,
    precision: str = "fp32",
    threshold: float = 0.5,
    boundary_tolerance: int = 3,
    limit: int | None = None,
    progress: bool | None = None,
) -> Promotion:
    """Compare ``champion`` and ``challenger`` on the same images and move ``champion`` if earned.

    The challenger is promoted only if its mean IoU beats the champion's by at least ``margin``
    AND no group's mean IoU drops by more than ``tolerance`` (paired, per image:
    :func:`clearbg.evaluate.compare.compare_evaluations`). With no champion yet, the challenger
    becomes the first one. On promotion ``previous-champion`` keeps the old champion (see
    :func:`rollback`) and the ``challenger`` alias is removed (it is the champion now). Either
    way a run in the ``clearbg-promote`` experiment records the params, both models' metrics,
    the decision (tag ``clearbg.decision``), the table and the side-by-side report, and both
    versions are tagged with the outcome.

    Args:
        name: the registered model.
        data: the held-out set, ``DATASET[:split]``.
        margin: how much higher the challenger's mean IoU must be.
        tolerance: how much any group's mean IoU may drop.
        tracking_uri: the store (default: :func:`resolve_tracking_uri`).
        fresh: evaluate both again even when the evaluation stored at registration measured
            exactly this (same :func:`evaluation_key`).
        device, precision, threshold, boundary_tolerance, limit, progress: for evaluating.

    Returns:
        The :class:`Promotion` (``print(result.table())``).

    Raises:
        UnknownModel: no such registered model, or it has no ``challenger``.
        RegistryError: the challenger already is the champion; the store refused a write.
        ComparisonError: the two evaluations do not cover the same images.

    Example:
        >>> result = promote("shop", "data/fashion:test", margin=0.005, tolerance=0.01)  # doctest: +SKIP
        >>> result.promoted, result.champion                                          # doctest: +SKIP
        (True, '4')
    """
    from clearbg.evaluate.compare import compare_evaluations, first_champion

    client, uri = _store(tracking_uri, create=False)
    challenger = _find_version(client, name, alias=CHALLENGER, version=None, uri=uri)
    aliases = dict(client.get_registered_model(name).aliases or {})
    champion = _find_version(client, name, alias=CHAMPION, version=None, uri=uri) if CHAMPION in aliases else None
    if champion is not None and champion.version == challenger.version:
        raise RegistryError(f"{name}: the challenger (v{challenger.version}) already is the champion; "
                            f"register a new version (clearbg register --name {name} ...) to compare")
    request = {"device": device, "precision": precision, "threshold": threshold,
               "boundary_tolerance": boundary_tolerance, "limit": limit}
    evaluations: dict[str, Evaluation] = {}
    reused: dict[str, bool] = {}
    roles = [(CHAMPION, champion), (CHALLENGER, challenger)] if champion is not None else [(CHALLENGER, challenger)]
    for role, version in roles:
        evaluations[role], reused[role] = _evaluate_version(client, uri, name, version, role, data, request, fresh, progress)
    if champion is None:
        decision = first_champion(margin, tolerance)
    else:
        decision = compare_evaluations(evaluations[CHAMPION].per_image, evaluations[CHALLENGER].per_image,
                                       margin=margin, tolerance=tolerance)
    run_id = _record_promotion(client, uri, name, data, decision, champion, challenger, evaluations, reused)
    with _mlflow_errors(f"moving the aliases of {name}", uri):
        _apply(client, name, decision, champion, challenger, run_id)
    now = challenger.version if decision.promote else champion.version
    return Promotion(name=name, decision=decision, champion_version=str(champion.version) if champion else None,
                     challenger_version=str(challenger.version), champion=str(now), run_id=run_id,
                     data=evaluations[CHALLENGER].data, reused=reused, evaluations=evaluations)


def _record_promotion(client: MlflowClient, uri: str, name: str, data: str, decision: Decision,
                      champion: ModelVersion | None, challenger: ModelVersion, evaluations: dict[str, Evaluation],
                      reused: dict[str, bool]) -> str:
    """One run in ``clearbg-promote``: params, both models' metrics, the decision, table and report."""
    from clearbg.evaluate.report import write_report
    from clearbg.evaluate.tracking import summary_metrics

    with _mlflow_errors(f"recording the promotion of {name}", uri):
        experiment = experiment_id(client, PROMOTE_EXPERIMENT)
        run = client.create_run(experiment, run_name=f"promote {name}", tags={
            "clearbg.decision": decision.verdict, "clearbg.reasons": "; ".join(decision.reasons)[:5000],
            "clearbg.registered_model": name})
        run_id = run.info.run_id
        try:
            log_params(client, run_id, {
                "name": name, "data": evaluations[CHALLENGER].data, "margin": decision.margin,
                "tolerance": decision.tolerance, "challenger_version": challenger.version,
                "champion_version": champion.version if champion else "none",
                "reused_evaluations": ",".join(r for r, f in reused.items() if f) or "none",
            })
            metrics: dict[str, float] = {}
            for role, evaluation in evaluations.items():
                metrics.update(summary_metrics(evaluation.summary(), prefix=f"{role}/"))
            for row in decision.rows():  # delta/iou, delta/iou/<group>, p_value/iou ...
                where = "" if row.group is None else f"/{row.group}"
                metrics[f"delta/{row.metric}{where}"] = row.delta
                metrics[f"p_value/{row.metric}{where}"] = row.p_value
            log_metrics(client, run_id, metrics)
            client.log_dict(run_id, decision.to_dict(), "decision.json")
            labels = (f"champion v{champion.version}" if champion else "champion", f"challenger v{challenger.version}")
            client.log_text(run_id, decision.table(*labels) + "\n", "comparison.txt")
            with tempfile.TemporaryDirectory(prefix="clearbg-promote-") as tmp:
                order = [evaluations[r] for r in (CHAMPION, CHALLENGER) if r in evaluations]
                write_report(order, tmp, title=f"{name}: {' vs '.join(e.model for e in order)} on {data}: "
                                               f"{decision.verdict}")
                client.log_artifacts(run_id, tmp, "report")
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
    return run_id


def _apply(client: MlflowClient, name: str, decision: Decision, champion: ModelVersion | None,
           challenger: ModelVersion, run_id: str) -> None:
    """Move the aliases (on promotion) and tag both versions with the outcome."""
    against = f"v{champion.version}" if champion else "no champion"
    if not decision.promote:
        client.set_model_version_tag(name, challenger.version, "clearbg.promotion", f"refused vs {against} (run {run_id})")
        return
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, champion.version)
        client.set_model_version_tag(name, champion.version, "clearbg.replaced_by", f"v{challenger.version} (run {run_id})")
    client.set_registered_model_alias(name, CHAMPION, challenger.version)
    client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, challenger.version, "clearbg.promotion", f"promoted over {against} (run {run_id})")


def rollback(name: str, *, tracking_uri: str | None = None) -> tuple[str, str]:
    """Swap ``champion`` and ``previous-champion``: undo the last promotion in one call.

    No evaluation: a rollback is an operator's decision (the numbers were recorded when the
    promotion happened). It is recorded as a ``clearbg-promote`` run with decision ``rollback``.

    Returns:
        ``(champion, previous_champion)`` versions after the swap.

    Raises:
        UnknownModel: no such model.
        RegistryError: nothing to roll back (no ``champion``, or no ``previous-champion``).

    Example:
        >>> rollback("shop")  # doctest: +SKIP
        ('3', '4')
    """
    client, uri = _store(tracking_uri, create=False)
    aliases = dict(_registered(client, name, uri).aliases or {})
    if CHAMPION not in aliases:
        raise RegistryError(f"nothing to roll back: {name} has no champion yet "
                            f"(promote one first: clearbg promote --name {name} --data DATASET)")
    if PREVIOUS_CHAMPION not in aliases:
        raise RegistryError(f"nothing to roll back: no previous champion; the champion of {name} is "
                            f"v{aliases[CHAMPION]} (a rollback undoes a promotion, and none replaced it)")
    current = _find_version(client, name, alias=CHAMPION, version=None, uri=uri)
    previous = _find_version(client, name, alias=PREVIOUS_CHAMPION, version=None, uri=uri)
    with _mlflow_errors(f"rolling back {name}", uri):
        experiment = experiment_id(client, PROMOTE_EXPERIMENT)
        run = client.create_run(experiment, run_name=f"rollback {name}", tags={
            "clearbg.decision": "rollback", "clearbg.registered_model": name,
            "clearbg.reasons": f"rollback: champion v{current.version} -> v{previous.version}"})
        log_params(client, run.info.run_id, {
            "name": name, "champion_version": previous.version, "replaced_version": current.version})
        client.set_registered_model_alias(name, CHAMPION, previous.version)
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current.version)
        client.set_model_version_tag(name, current.version, "clearbg.promotion",
                                     f"rolled back to v{previous.version} (run {run.info.run_id})")
        client.set_terminated(run.info.run_id, status="FINISHED")
    return str(previous.version), str(current.version)
