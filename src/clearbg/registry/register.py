"""Registering a model with the MLflow Model Registry, with its evaluation attached.

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
``create_model("models:/shop@champion")`` loads without unpickling code. Its ``python_function``
flavour is clearbg's (:mod:`clearbg.registry.pyfunc`): photo bytes in, cutout or mask PNG out,
so ``mlflow models serve -m models:/shop@champion`` and ``mlflow.pyfunc.spark_udf`` take photos. The same run also logs
its fp32 ONNX export (dynamic batch) with MLflow's onnx flavour; the version's ``clearbg.onnx`` tag
points at it, and ``Predictor("models:/shop@champion", engine="onnxruntime")`` runs that file
(:func:`clearbg.models.mlflow_uris.resolve_onnx_uri`).

The store is the one training uses (:func:`clearbg.mlflow_store.resolve_tracking_uri`): an
explicit URI, else ``MLFLOW_TRACKING_URI``, else the embedded ``sqlite:///<abs runs>/mlflow.db``.

Example:
    >>> reg = register_model("runs/exp1/checkpoints/best.pt", "shop", "data/fashion:test")  # doctest: +SKIP
    >>> result = promote("shop", "data/fashion:test")                                          # doctest: +SKIP
    >>> print(result.table())                                                                 # doctest: +SKIP
    >>> model = create_model("models:/shop@champion")                                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearbg.errors import RegistryError
from clearbg.evaluate.report import write_report
from clearbg.evaluate.run import Evaluation, evaluate_model
from clearbg.evaluate.settings import EvalSettings
from clearbg.evaluate.tracking import log_evaluation
from clearbg.inference.onnx_export import export_onnx
from clearbg.mlflow_store import (
    experiment_id,
    log_onnx_model,
    log_params,
    log_pytorch_model,
    metric_key,
    mlflow_errors,
    open_store,
    using_tracking_uri,
)
from clearbg.models.hub import is_checkpoint_path, resolve
from clearbg.models.mlflow_uris import (
    CHECKPOINT_FILE,
    CONFIDENCE_FILE,
    CONFIDENCE_TAG,
    ONNX_TAG,
    find_version,
    is_mlflow_uri,
    parse_model_uri,
    save_checkpoint,
)
from clearbg.quality.calibration import Calibration
from clearbg.registry import pyfunc
from clearbg.quality.fit import calibrate

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from torch import nn

    from clearbg.models.specs import ModelSpec

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
EVALUATION_ARTIFACTS = "evaluation"  # run artifact folder of a version's evaluation
CONFIDENCE_ARTIFACTS = "confidence"  # run artifact folder of a version's confidence calibration
_log = logging.getLogger(__name__)
REGISTER_EXPERIMENT = "clearbg-register"


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
        calibration: URI of its confidence calibration (fitted on the dataset's ``val`` split),
            or None when it has none (no validation split, or ``calibrate=False``).
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
    calibration: str | None = None


def register_model(
    model: str | os.PathLike,
    name: str,
    data: str | None = None,
    *,
    alias: str = CHALLENGER,
    tracking_uri: str | None = None,
    evaluation: Evaluation | None = None,
    settings: EvalSettings | None = None,
    progress: bool | None = None,
    description: str | None = None,
    onnx: bool = True,
    calibrate_on: str | None = "val",
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
        settings, progress: how to evaluate (:class:`EvalSettings`; default fp32).
        description: the version's description in the registry.
        onnx: also log the fp32 ONNX export (onnx flavour) and tag the version with its URI.
        calibrate_on: fit the version's confidence calibration on this split of ``data``'s
            dataset (a score belongs to one model version); None skips it. A dataset without the
            split registers without one, with a warning.

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
    if evaluation is None and data is None:
        raise RegistryError(f"registering {model} needs a held-out set to evaluate it on (data=DATASET[:split])")
    client, uri = open_store(tracking_uri, create=True)
    source = str(model)
    with tempfile.TemporaryDirectory(prefix="clearbg-register-") as tmp:
        checkpoint = Path(tmp) / CHECKPOINT_FILE
        module, spec = _load_source(source, uri, checkpoint)
        if evaluation is None:
            evaluation = evaluate_model(str(checkpoint), data, settings=settings, progress=progress, name=source)
        folder = Path(tmp) / EVALUATION_ARTIFACTS
        write_report([evaluation], folder, title=f"{name}: {source} on {evaluation.data}")
        with mlflow_errors(f"registering {source} as {name}", uri):
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
                model_uri = log_pytorch_model(client, experiment, run_id, module.cpu().eval(), extra_files=[checkpoint],
                                              flavor=pyfunc, signature=pyfunc.signature())
                tags = _version_tags(source, spec.name, evaluation)
                if onnx:
                    tags[ONNX_TAG] = log_onnx_model(client, experiment, run_id, export_onnx(module, spec, dynamic_batch=True))
                version = _create_version(client, name, model_uri, run_id, description or f"{spec.name} from {source}", tags)
                client.set_registered_model_alias(name, alias, version)
            except BaseException:
                client.set_terminated(run_id, status="FAILED")
                raise
            client.set_terminated(run_id, status="FINISHED")
        calibration = None
        if calibrate_on is not None and data is not None:
            calibration = _refit_calibration(checkpoint, data, calibrate_on, name, version, uri, settings, progress)
    return Registration(name=name, version=version, alias=alias, model_uri=f"models:/{name}/{version}", run_id=run_id,
                        source=source, spec=spec.name, evaluation=evaluation, tracking_uri=uri, calibration=calibration)


def _refit_calibration(checkpoint: Path, data: str, split: str, name: str, version: str, uri: str,
                       settings: EvalSettings | None, progress: bool | None) -> str | None:
    """Fit the new version's confidence calibration on the dataset's ``split`` and attach it."""
    from clearbg.evaluate.settings import parse_data_arg
    from clearbg.errors import ClearbgError

    dataset, _ = parse_data_arg(data)
    try:
        fitted = calibrate(str(checkpoint), f"{dataset}:{split}", version=f"models:/{name}/{version}",
                           device=settings.device if settings else None, progress=progress)
    except ClearbgError as err:
        _log.warning("models:/%s/%s registered without a confidence calibration (%s); fit it later with "
                     "`clearbg calibrate --model models:/%s/%s --data DATASET:val`", name, version, err, name, version)
        return None
    return attach_calibration(f"models:/{name}/{version}", fitted, tracking_uri=uri)


def attach_calibration(model_uri: str, calibration: Calibration, *, tracking_uri: str | None = None) -> str:
    """Store a calibration with a registered version: an artifact of the run that registered it,
    and the version tag ``clearbg.confidence`` pointing at it (what ``resolve_confidence_uri`` reads).

    Returns:
        The artifact's URI.

    Raises:
        RegistryError: ``model_uri`` is not a registered version, the calibration is another
            version's, or the store refused the write.
    """
    client, uri = open_store(tracking_uri, create=False)
    name, alias, number = parse_model_uri(model_uri)
    found = find_version(client, name, alias=alias, version=number, uri=uri)
    if calibration.model != f"models:/{name}/{found.version}":
        raise RegistryError(f"this calibration was fitted for {calibration.model}, not models:/{name}/{found.version}")
    with tempfile.TemporaryDirectory(prefix="clearbg-confidence-") as tmp, \
            mlflow_errors(f"storing the calibration of {model_uri}", uri):
        path = Path(tmp) / CONFIDENCE_FILE
        path.write_text(calibration.to_json())
        client.log_artifact(found.run_id, str(path), CONFIDENCE_ARTIFACTS)
        artifact = f"runs:/{found.run_id}/{CONFIDENCE_ARTIFACTS}/{CONFIDENCE_FILE}"
        client.set_model_version_tag(name, found.version, CONFIDENCE_TAG, artifact)
    return artifact


def _load_source(source: str, uri: str, checkpoint: Path) -> tuple[nn.Module, ModelSpec]:
    """Load what is being registered and write it as a plain clearbg checkpoint."""
    found = resolve(source, tracking_uri=uri)
    if found.network is None:
        raise RegistryError(f"{source} is an ONNX export; register the checkpoint it was exported from")
    extra = _provenance(Path(source)) if is_checkpoint_path(source) and not is_mlflow_uri(source) else {}
    save_checkpoint(found.network, checkpoint, source=source, spec=found.spec, extra=extra)
    return found.network.eval(), found.spec


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
    return {k: payload[k] for k in ("config", "epoch", "step", "metrics", "interpolation") if k in payload}


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
            "eval.n": str(summary["n"]), "eval.key": EvalSettings.from_record(evaluation.settings).fingerprint(evaluation.data)}
    for key in ("iou_mean", "iou_median", "iou_pooled", "dice_mean", "boundary_f_mean", "share_iou_95",
                "share_iou_97", "share_iou_99"):
        if key in summary["overall"]:
            tags[f"eval.{key}"] = f"{summary['overall'][key]:.4f}"
    for group, figures in summary["groups"].items():
        tags[metric_key(f"eval.group.{group}.iou_mean")] = f"{figures['iou_mean']:.4f}"
    return tags
