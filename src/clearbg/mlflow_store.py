"""One way to find and talk to the MLflow store, for training, tuning, evaluation and the registry.

The store is chosen by one rule (:func:`resolve_tracking_uri`): an explicit URI, else
``$MLFLOW_TRACKING_URI``, else the embedded ``sqlite:///<abs out>/mlflow.db`` (``out`` defaults
to ``runs``). No server is needed for the default. For every SQLite store, experiments keep
their artifacts in ``mlartifacts/`` beside the database file (:func:`experiment_id`), never in
``./mlruns`` of whatever folder the process happens to run in.

Keys are made legal for MLflow here (:func:`metric_key`, :func:`flatten_params`), logging is
batched within MLflow's limits (:func:`log_params`, :func:`log_metrics`), and the few calls that
only exist in MLflow's fluent API go through :func:`using_tracking_uri`, which points it at our
store for the moment and leaves the user's ``MLFLOW_TRACKING_URI`` as it was.

Example:
    >>> uri = resolve_tracking_uri(out="runs")             # doctest: +SKIP
    >>> client = connect(uri)                               # doctest: +SKIP
    >>> run = client.create_run(experiment_id(client, "clearbg"))  # doctest: +SKIP
    >>> log_metrics(client, run.info.run_id, {"val/iou/shorts & tops": 0.9})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearbg.errors import ClearbgError, RegistryError, UnknownModel

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from torch import nn

DEFAULT_OUT = "runs"  # training's default output folder: its store is <out>/mlflow.db
OFF = ("off", "none", "")  # tracking URIs that turn MLflow off
ARTIFACTS_FOLDER = "mlartifacts"  # beside a SQLite store: the artifacts of its experiments
_MAX_PARAM_LEN = 6000  # MLflow 3's limit on a param value
_PARAMS_PER_BATCH, _METRICS_PER_BATCH = 100, 1000  # MLflow's log_batch limits
# MLflow (on POSIX) accepts letters, digits, _ - . space : / in keys; cluster names come from data.
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")


# --------------------------------------------------------------------------- which store


def is_off(tracking_uri: str | None) -> bool:
    """True for the tracking URIs that turn MLflow off (``off``, ``none``, empty).

    Example:
        >>> is_off("off"), is_off(None), is_off("sqlite:///runs/mlflow.db")
        (True, False, False)
    """
    return isinstance(tracking_uri, str) and tracking_uri.strip().lower() in OFF


def default_tracking_uri(out: str | os.PathLike = DEFAULT_OUT) -> str:
    """The embedded store of an output folder: ``sqlite:///<abs out>/mlflow.db``.

    Example:
        >>> default_tracking_uri("/tmp/runs")
        'sqlite:////tmp/runs/mlflow.db'
    """
    return f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(tracking_uri: str | None = None, out: str | os.PathLike = DEFAULT_OUT) -> str:
    """The MLflow store to use, the same rule for training, tuning, evaluation and the registry.

    Args:
        tracking_uri: an explicit URI (``http://host:5000``, ``sqlite:///x.db``, ``databricks``,
            or ``off``); wins when given.
        out: the output folder whose embedded store is the default.

    Returns:
        ``tracking_uri`` if given, else ``$MLFLOW_TRACKING_URI`` if set, else
        ``sqlite:///<absolute out>/mlflow.db``.

    Raises:
        ClearbgError: the default store is needed but ``out`` is remote (a SQLite file cannot
            live in a bucket).

    Example:
        >>> resolve_tracking_uri("http://mlflow:5000")
        'http://mlflow:5000'
        >>> resolve_tracking_uri(out="/tmp/runs")  # with MLFLOW_TRACKING_URI unset  # doctest: +SKIP
        'sqlite:////tmp/runs/mlflow.db'
    """
    if tracking_uri is not None:
        return tracking_uri
    from_env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if from_env:
        return from_env
    from clearbg.storage import is_remote

    if is_remote(str(out)):
        raise ClearbgError(
            f"out={out!r} is remote, so the default SQLite MLflow store cannot live there; set "
            "tracking_uri (--set tracking_uri=URL, e.g. an MLflow server) or MLFLOW_TRACKING_URI"
        )
    return default_tracking_uri(out)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (MLflow's or Optuna's), else None.

    Example:
        >>> sqlite_path("sqlite:////tmp/runs/mlflow.db"), sqlite_path("http://mlflow:5000")
        (PosixPath('/tmp/runs/mlflow.db'), None)
    """
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def connect(uri: str) -> MlflowClient:
    """A client for tracking and the model registry on ``uri``; a SQLite store (and its folder)
    is created on first use, without MLflow's set-up chatter.

    Example:
        >>> client = connect("sqlite:////tmp/runs/mlflow.db")  # doctest: +SKIP
    """
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    with quiet("mlflow.store.db.utils", "alembic"):  # a new store's table set-up is not news
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


# Every command reads the environment variable, while only some have --tracking-uri (remove, batch,
# serve and export load models:/ URIs too and do not), so the advice names the variable.
_STORE_HINT = "set MLFLOW_TRACKING_URI (e.g. MLFLOW_TRACKING_URI=sqlite:///path/to/runs/mlflow.db)"


def open_store(tracking_uri: str | None, *, create: bool) -> tuple[MlflowClient, str]:
    """A client on the resolved store, for the model registry. Reading from a default SQLite
    file that does not exist fails with advice instead of silently creating an empty store.

    Raises:
        RegistryError: the URI turns MLflow off.
        UnknownModel: ``create`` is false and the SQLite store does not exist.
    """
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
def mlflow_errors(what: str, uri: str) -> Iterator[None]:
    """Turn MLflow's exceptions into ``RegistryError``, naming what was being done and where."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        raise RegistryError(f"{what} failed in the MLflow store {uri}: {err.message}") from err


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name`` in the client's store, created if missing.

    A new experiment in a SQLite store keeps its artifacts in ``mlartifacts/`` beside the
    database file; left to MLflow they would go to ``./mlruns`` of the current folder. A server
    chooses its own artifact location.

    Raises:
        ClearbgError: the experiment exists but is deleted.
        MlflowException: the store refused.

    Example:
        >>> experiment_id(connect("sqlite:////tmp/runs/mlflow.db"), "clearbg")  # doctest: +SKIP
        '1'
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        db = sqlite_path(client.tracking_uri)
        location = (db.resolve().parent / ARTIFACTS_FOLDER).as_uri() if db is not None else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another process created it first
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        raise ClearbgError(
            f"MLflow experiment {name!r} is deleted in {client.tracking_uri}; restore it "
            f"(mlflow experiments restore --experiment-id {found.experiment_id}) or use another experiment name"
        )
    return found.experiment_id


# --------------------------------------------------------------------------- MLflow's fluent API and logs


@contextlib.contextmanager
def quiet(*logger_names: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise these loggers to ``level`` for a moment (MLflow's progress and pickle notes).

    Example:
        >>> with quiet("mlflow", "alembic"):
        ...     pass
    """
    loggers = [logging.getLogger(name) for name in logger_names]
    old = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, level_before in zip(loggers, old, strict=True):
            logger.setLevel(level_before)


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.pytorch.log_model``, ``load_model``, artifact
    downloads) at ``uri`` for a moment, quietly and without progress bars.

    MLflow's own switch writes ``MLFLOW_TRACKING_URI`` and, switching back, deletes it; the
    user's value (or its absence) is put back here.

    Example:
        >>> with using_tracking_uri("sqlite:////tmp/runs/mlflow.db"):  # doctest: +SKIP
        ...     model = mlflow.pytorch.load_model("models:/shop@champion")
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")}
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        with quiet("mlflow"), _use_tracking_uri(uri):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --------------------------------------------------------------------------- logging


def metric_key(name: str) -> str:
    """``name`` with the characters MLflow refuses in keys replaced by ``_``.

    Example:
        >>> metric_key("val/iou/shorts & tops")
        'val/iou/shorts _ tops'
    """
    return _BAD_KEY_CHARS.sub("_", name)


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested config dict into MLflow params: ``{"loss": {"iou": 0.5}}`` -> ``{"loss.iou": "0.5"}``.

    Lists and other non-scalar leaves are JSON; values are cut to MLflow's 6000 characters.

    Example:
        >>> flatten_params({"lr": 0.001, "loss": {"bce": 1.0}, "sizes": [1, 2]})
        {'lr': '0.001', 'loss.bce': '1.0', 'sizes': '[1, 2]'}
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        if isinstance(value, (str, int, float, bool)) or value is None:
            text = str(value)
        else:
            text = json.dumps(value, default=str)
        flat[metric_key(name)] = text[:_MAX_PARAM_LEN]
    return flat


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any], prefix: str = "") -> None:
    """Log a (nested) dict as params, flattened (:func:`flatten_params`), in MLflow-sized batches.

    Example:
        >>> log_params(client, run_id, {"lr": 0.001, "loss": {"iou": 0.5}})  # doctest: +SKIP
    """
    from mlflow.entities import Param

    flat = [Param(k, v) for k, v in flatten_params(params, prefix).items()]
    for start in range(0, len(flat), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=flat[start:start + _PARAMS_PER_BATCH])


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log scalars at ``step`` with legal keys (:func:`metric_key`), in MLflow-sized batches.

    Example:
        >>> log_metrics(client, run_id, {"val/iou": 0.91, "val/iou/shorts & tops": 0.88}, step=3)  # doctest: +SKIP
    """
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(metric_key(k), float(v), now, int(step)) for k, v in metrics.items()]
    for start in range(0, len(batch), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch[start:start + _METRICS_PER_BATCH])


def log_pytorch_model(client: MlflowClient, experiment: str, run_id: str, module: nn.Module, *,
                      name: str = "model", extra_files: Sequence[str | os.PathLike] = (), flavor: Any = None,
                      signature: Any = None) -> str:
    """Log ``module`` with MLflow's pytorch flavour into ``run_id``; returns its ``models:/m-...`` URI.

    Pickled (``serialization_format="pickle"``), so photos of any size go through the loaded
    model; MLflow's default torch.export format fixes the input size. The requirements are
    given, which skips MLflow's inference (it re-imports the model in a subprocess).

    Args:
        client: a client on the store (:func:`connect`).
        experiment: the run's experiment id; the logged model is created there.
        run_id: the run that logs it.
        module: the model, on CPU in eval mode.
        name: the logged model's name (its artifact folder).
        extra_files: files stored beside it (``extra_files/<name>``).
        flavor: the module ``mlflow.models.Model.log`` saves it with (default ``mlflow.pytorch``;
            ``clearbg.registry.pyfunc`` adds clearbg's photo-in, PNG-out ``python_function``).
        signature: the model's signature, if the flavour has one.

    Example:
        >>> uri = log_pytorch_model(client, experiment_id(client, "clearbg"), run_id, model)  # doctest: +SKIP
    """
    import mlflow.pytorch
    from mlflow.models import Model
    import numpy as np
    import torch

    import clearbg

    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}",
                    f"clearbg=={getattr(clearbg, '__version__', '0.1.0')}"]
    # Created here in the run's experiment: left to MLflow it would land in the fluent API's
    # current experiment ("Default", artifacts under ./mlruns).
    logged = client.create_logged_model(experiment, name=name, source_run_id=run_id)
    with using_tracking_uri(client.tracking_uri):
        # What mlflow.pytorch.log_model does, with the flavour module as a parameter.
        info = Model.log(artifact_path=None, name=name, flavor=flavor or mlflow.pytorch, pytorch_model=module,
                         serialization_format="pickle", run_id=run_id, model_id=logged.model_id,
                         pip_requirements=requirements, extra_files=[str(f) for f in extra_files] or None,
                         signature=signature)
    return info.model_uri


def log_onnx_model(client: MlflowClient, experiment: str, run_id: str, proto: Any, *, name: str = "onnx") -> str:
    """Log a ``clearbg export`` ONNX model with MLflow's onnx flavour; returns its ``models:/m-...`` URI.

    The signature is the export's own: ``image`` float32 (N, 3, S, S), already normalised as
    the file's ``metadata_props`` say, to ``mask`` float32 (N, 1, S, S). ``mlflow.onnx.load_model``
    gives the ModelProto back; ``mlflow.pyfunc.load_model`` runs it on ONNX Runtime.

    Args:
        client, experiment, run_id: as for :func:`log_pytorch_model`.
        proto: the ``onnx.ModelProto`` (``clearbg.inference.onnx_export.export_onnx``).
        name: the logged model's name (its artifact folder).
    """
    import mlflow.onnx
    import numpy as np
    import onnx
    import onnxruntime
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def spec(value: Any) -> TensorSpec:
        dims = [d.dim_value or -1 for d in value.type.tensor_type.shape.dim]
        return TensorSpec(np.dtype(np.float32), tuple(dims), value.name)

    signature = ModelSignature(Schema([spec(v) for v in proto.graph.input]), Schema([spec(v) for v in proto.graph.output]))
    requirements = [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}", f"numpy=={np.__version__}"]
    logged = client.create_logged_model(experiment, name=name, source_run_id=run_id)
    with using_tracking_uri(client.tracking_uri):
        info = mlflow.onnx.log_model(proto, name=name, run_id=run_id, model_id=logged.model_id, signature=signature,
                                     pip_requirements=requirements, save_as_external_data=False)
    return info.model_uri
