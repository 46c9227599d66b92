"""Experiment tracking for training runs: MLflow (params, metrics, images, model) plus TensorBoard.

One :class:`Tracker` per training run. By default MLflow needs no server: runs go to a SQLite
store ``<out>/mlflow.db`` with artifacts under ``<out>/mlartifacts``; ``config.tracking_uri``
points it anywhere else (``http://host:5000``, ``databricks``, another ``sqlite:///`` file) and
``"off"`` turns MLflow off. TensorBoard event files go to ``<run_dir>/tensorboard`` when
``config.tensorboard`` is true. Only rank 0 tracks: on other ranks, or with ``enabled=False``,
every method is a no-op, so the loop calls them unconditionally.

Metric names (shared by loop, CLI and tune): ``train/loss``, ``train/lr``, ``val/iou``,
``val/dice``, ``val/iou/<cluster>``, ``val/dice/<cluster>``, ``speed/images_per_s``.

A run interrupted before it finished (a killed worker, a lost machine: status RUNNING or FAILED)
keeps its MLflow run: the run id is remembered in ``<run_dir>/mlflow_run.json`` and a restart
with ``resume`` other than ``"never"`` continues that run instead of opening a second one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clearbg.errors import ClearbgError

if TYPE_CHECKING:
    from clearbg.train.config import TrainConfig

RUN_FILE = "mlflow_run.json"  # in run_dir: which MLflow run this folder belongs to
OFF = ("off", "none", "")  # tracking_uri values that turn MLflow off
_MAX_PARAM_LEN = 6000  # MLflow 3's limit on a param value
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")  # MLflow rejects other characters in keys


def default_tracking_uri(out: str | os.PathLike) -> str:
    """The embedded store for an output folder: ``sqlite:///<abs out>/mlflow.db``.

    Example:
        >>> default_tracking_uri("/tmp/runs")
        'sqlite:////tmp/runs/mlflow.db'
    """
    return f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"


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
        flat[_BAD_KEY_CHARS.sub("_", name)] = text[:_MAX_PARAM_LEN]
    return flat


def _metric_key(name: str) -> str:
    # Cluster names come from data (product types); keep them readable but legal for MLflow.
    return _BAD_KEY_CHARS.sub("_", name)


def _rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0)  # set by torchrun before the group exists


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # DDP keeps the real model in .module, torch.compile in ._orig_mod; log the plain model.
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


@contextlib.contextmanager
def _quiet(logger_name: str, level: int = logging.ERROR) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


class Tracker:
    """MLflow + TensorBoard logging for one training run; a no-op on ranks other than 0.

    Args:
        config: the training config; uses ``out``, ``tracking_uri``, ``experiment``,
            ``run_name``, ``tensorboard``, ``resume`` and ``to_dict()``.
        run_dir: the run's local folder (TensorBoard events go to ``<run_dir>/tensorboard``).
        enabled: False makes every method a no-op (it is also off on non-zero ranks).
        parent_run_id: make this run a child of that MLflow run (an Optuna trial under its study).
        nested: make this run a child of the active fluent MLflow run (``mlflow.start_run``).

    Raises:
        ClearbgError: ``nested`` without an active run, or the default store asked for with a
            remote ``out`` (give ``tracking_uri``).

    Example:
        >>> tracker = Tracker(config, "runs/exp1")
        >>> tracker.start(config.to_dict())
        >>> tracker.log_metrics({"train/loss": 0.4, "val/iou": 0.81}, step=1)
        >>> tracker.log_model(model)
        >>> tracker.end()
    """

    def __init__(self, config: TrainConfig, run_dir: str | os.PathLike, *, enabled: bool = True,
                 parent_run_id: str | None = None, nested: bool = False) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.enabled = bool(enabled) and _rank() == 0
        self.parent_run_id = parent_run_id
        self.nested = nested
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.model_uri: str | None = None
        self.resumed = False  # True when start() continued an interrupted MLflow run
        self._client = None
        self._writer = None
        uri = getattr(config, "tracking_uri", None)
        self.mlflow_on = self.enabled and not (isinstance(uri, str) and uri.strip().lower() in OFF)
        self.tensorboard_on = self.enabled and bool(getattr(config, "tensorboard", True))
        self.tracking_uri: str | None = None
        if self.mlflow_on:
            if uri is None:
                from clearbg.storage import is_remote

                if is_remote(str(config.out)):
                    raise ClearbgError(
                        f"out={config.out!r} is remote, so the default SQLite MLflow store cannot live "
                        "there; set tracking_uri (e.g. an MLflow server URL) or tracking_uri=off"
                    )
                self.tracking_uri = default_tracking_uri(config.out)
            else:
                self.tracking_uri = uri

    # ----------------------------------------------------------------- lifecycle

    def start(self, params: Mapping[str, Any] | None = None) -> None:
        """Open the MLflow run (or continue an interrupted one) and the TensorBoard writer.

        Args:
            params: the resolved config as a (nested) dict; logged flattened as MLflow params.
                None logs ``config.to_dict()``.

        Raises:
            ClearbgError: the tracking store cannot be reached or the experiment is deleted.
        """
        if not self.enabled or self.run_id is not None or self._writer is not None:
            return
        if params is None:
            params = self.config.to_dict()
        if self.mlflow_on:
            self._start_mlflow(params)
        if self.tensorboard_on:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def _start_mlflow(self, params: Mapping[str, Any]) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self._client = client = MlflowClient(self.tracking_uri)
        try:
            parent = self._parent_id()
            if parent is not None:
                self.experiment_id = client.get_run(parent).info.experiment_id
            else:
                self.experiment_id = self._experiment_id()
            previous = self._interrupted_run()
            if previous is not None:
                self.run_id, self.resumed = previous, True
                client.update_run(previous, status="RUNNING")
                return
            tags = {"clearbg.run_dir": str(self.run_dir.resolve())}
            if parent is not None:
                tags["mlflow.parentRunId"] = parent
            run = client.create_run(self.experiment_id, run_name=getattr(self.config, "run_name", None)
                                    or self.run_dir.name, tags=tags)
            self.run_id = run.info.run_id
            flat = [Param(k, v) for k, v in flatten_params(params).items()]
            for i in range(0, len(flat), 100):  # MLflow takes at most 100 params per batch
                client.log_batch(self.run_id, params=flat[i:i + 100])
            client.log_dict(self.run_id, dict(params), "config.json")
        except MlflowException as err:
            raise ClearbgError(f"MLflow tracking at {self.tracking_uri} failed: {err.message}") from err
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "experiment_id": self.experiment_id}
        (self.run_dir / RUN_FILE).write_text(json.dumps(record, indent=1))

    def _parent_id(self) -> str | None:
        if self.parent_run_id is not None:
            return self.parent_run_id
        if not self.nested:
            return None
        import mlflow

        active = mlflow.active_run()
        if active is None:
            raise ClearbgError("Tracker(nested=True) needs an active MLflow run (mlflow.start_run) "
                               "or an explicit parent_run_id")
        return active.info.run_id

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        name = getattr(self.config, "experiment", None) or "clearbg"
        client = self._client
        found = client.get_experiment_by_name(name)
        if found is None:
            location = None
            if self.tracking_uri == default_tracking_uri(self.config.out):
                location = (Path(self.config.out).resolve() / "mlartifacts").as_uri()
            try:
                return client.create_experiment(name, artifact_location=location)
            except MlflowException:  # another process created it first
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            raise ClearbgError(f"MLflow experiment {name!r} is deleted; restore it or pick another --set experiment=...")
        return found.experiment_id

    def _interrupted_run(self) -> str | None:
        # Continue the run this folder already has if it was interrupted and the loop is allowed
        # to resume; otherwise (finished, pruned, resume=never) open a new one.
        from mlflow.exceptions import MlflowException

        if getattr(self.config, "resume", "auto") == "never":
            return None
        path = self.run_dir / RUN_FILE
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            if record.get("tracking_uri") != self.tracking_uri:
                return None
            run = self._client.get_run(record["run_id"])
        except (ValueError, KeyError, OSError, MlflowException):  # unreadable record or run gone: start fresh
            return None
        # RUNNING: the process was killed; FAILED: it crashed (a survivor of a lost peer ends so).
        # FINISHED runs are done and KILLED ones were pruned or stopped on purpose.
        if run.info.status not in ("RUNNING", "FAILED") or run.info.lifecycle_stage == "deleted":
            return None
        if run.info.experiment_id != self.experiment_id:
            return None
        return run.info.run_id

    def end(self, status: str = "FINISHED") -> None:
        """Close the run as FINISHED, FAILED or KILLED (pruned trials) and flush TensorBoard; idempotent."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
        if self._client is not None and self.run_id is not None:
            self._client.set_terminated(self.run_id, status=status)
            self._client = None

    def __enter__(self) -> Tracker:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
        elif exc_type.__name__ == "TrialPruned" or issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED")
        else:
            self.end("FAILED")

    # ----------------------------------------------------------------- logging

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalars at a step (global step or epoch, as the loop chooses) to MLflow and TensorBoard.

        Example:
            >>> tracker.log_metrics({"train/loss": 0.31, "train/lr": 1e-3}, step=120)
        """
        if not self.enabled or not metrics:
            return
        values = {k: float(v) for k, v in metrics.items()}
        if self._client is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            batch = [Metric(_metric_key(k), v, now, int(step)) for k, v in values.items()]
            for i in range(0, len(batch), 1000):
                self._client.log_batch(self.run_id, metrics=batch[i:i + 1000])
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(k, v, int(step))

    def log_image(self, name: str, image: np.ndarray, step: int) -> None:
        """Log an HxWx3 uint8 image (a prediction grid) as ``images/<name>_step<NNNNNN>.png`` and to TensorBoard.

        Raises:
            ClearbgError: the array is not HxWx3 (or HxW) uint8.
        """
        if not self.enabled:
            return
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ClearbgError(f"log_image({name!r}) wants an HxWx3 uint8 array, got {image.dtype} {image.shape}")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if self._client is not None:
            with _quiet("mlflow"):
                self._client.log_image(self.run_id, image, artifact_file=f"images/{_metric_key(name)}_step{int(step):06d}.png")
        if self._writer is not None:
            self._writer.add_image(name, image, int(step), dataformats="HWC")

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Copy a local file or folder (a checkpoint, a report) into the run's artifacts."""
        if self._client is None:
            return
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_model(self, model: torch.nn.Module, name: str = "model") -> str | None:
        """Log the model with MLflow's pytorch flavour (pickled, so any input size loads back).

        The model is unwrapped from DDP / ``torch.compile`` and copied to CPU in eval mode first;
        it loads back with ``mlflow.pytorch.load_model(tracker.model_uri)``.

        Returns:
            The model URI (``models:/m-...``), or None when tracking is off.
        """
        if self._client is None:
            return None
        import mlflow
        import mlflow.pytorch
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        import clearbg

        plain = copy.deepcopy(_unwrap(model)).cpu().eval()
        plain = plain.to(memory_format=torch.contiguous_format)
        # Explicit requirements skip MLflow's inference, which re-imports the model in a subprocess.
        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}",
                        f"clearbg=={getattr(clearbg, '__version__', '0.1.0')}"]
        # Create the LoggedModel in this run's experiment ourselves: left to MLflow it would land
        # in the fluent API's current experiment ("Default", artifacts under ./mlruns).
        logged = self._client.create_logged_model(self.experiment_id, name=name, source_run_id=self.run_id)
        with _use_tracking_uri(self.tracking_uri), _quiet("mlflow.pytorch"):
            info = mlflow.pytorch.log_model(plain, name=name, serialization_format="pickle", run_id=self.run_id,
                                            model_id=logged.model_id, pip_requirements=requirements)
        self.model_uri = info.model_uri
        return self.model_uri
