"""Experiment tracking for training runs: MLflow (params, metrics, images, model) plus TensorBoard.

One :class:`Tracker` per training run. The store is found as everywhere in clearbg
(:func:`clearbg.mlflow_store.resolve_tracking_uri`): ``config.tracking_uri`` (``http://host:5000``,
``databricks``, another ``sqlite:///`` file; ``"off"`` turns MLflow off), else
``MLFLOW_TRACKING_URI``, else a SQLite store ``<out>/mlflow.db`` that needs no server. A SQLite
store keeps its artifacts beside it (``<out>/mlartifacts``). TensorBoard event files go to
``<run_dir>/tensorboard`` when ``config.tensorboard`` is true. Only rank 0 tracks: on other
ranks, or with ``enabled=False``, every method is a no-op, so the loop calls them unconditionally.

Metric names (shared by loop, CLI and tune): ``train/loss``, ``train/lr``, ``val/iou``,
``val/dice``, ``val/iou/<cluster>``, ``val/dice/<cluster>``, ``speed/images_per_s``.

A run interrupted before it finished (a killed worker, a lost machine: status RUNNING or FAILED)
keeps its MLflow run: the run id is remembered in ``<run_dir>/mlflow_run.json`` and a restart
with ``resume`` other than ``"never"`` continues that run instead of opening a second one.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clearbg.errors import ClearbgError
from clearbg.mlflow_store import (
    connect,
    experiment_id,
    is_off,
    log_metrics,
    log_params,
    log_pytorch_model,
    metric_key,
    quiet,
    resolve_tracking_uri,
)

if TYPE_CHECKING:
    from clearbg.train.config import TrainConfig

RUN_FILE = "mlflow_run.json"  # in run_dir: which MLflow run this folder belongs to


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
        self.mlflow_on = self.enabled and not is_off(uri)
        self.tensorboard_on = self.enabled and bool(getattr(config, "tensorboard", True))
        self.tracking_uri: str | None = None
        if self.mlflow_on:  # explicit > MLFLOW_TRACKING_URI > <out>/mlflow.db, as for the registry
            self.tracking_uri = resolve_tracking_uri(uri, config.out)

    # ----------------------------------------------------------------- lifecycle

    def start(self, params: Mapping[str, Any] | None = None, *, resuming: bool = False) -> None:
        """Open the MLflow run (or continue this folder's run) and the TensorBoard writer.

        Args:
            params: the resolved config as a (nested) dict; logged flattened as MLflow params.
                None logs ``config.to_dict()``.
            resuming: the training loop continues this folder's checkpoint, so its MLflow run
                continues too, whatever its status (a finished run extended with a larger
                ``max_steps`` or ``epochs`` keeps one history). Otherwise only an interrupted
                run (RUNNING or FAILED) is continued.

        Raises:
            ClearbgError: the tracking store cannot be reached or the experiment is deleted.
        """
        if not self.enabled or self.run_id is not None or self._writer is not None:
            return
        if params is None:
            params = self.config.to_dict()
        if self.mlflow_on:
            self._start_mlflow(params, resuming)
        if self.tensorboard_on:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def _start_mlflow(self, params: Mapping[str, Any], resuming: bool) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._client = client = connect(self.tracking_uri)
            parent = self._parent_id()
            if parent is not None:
                self.experiment_id = client.get_run(parent).info.experiment_id
            else:
                self.experiment_id = experiment_id(client, getattr(self.config, "experiment", None) or "clearbg")
            previous = self._previous_run(resuming)
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
            log_params(client, self.run_id, params)
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

    def _previous_run(self, resuming: bool) -> str | None:
        # Continue the run this folder already has when the loop resumes its checkpoint, or when
        # it was interrupted; otherwise (finished or pruned and not resumed, resume=never) open
        # a new one.
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
        if run.info.lifecycle_stage == "deleted" or (not resuming and run.info.status not in ("RUNNING", "FAILED")):
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
            log_metrics(self._client, self.run_id, values, step)
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
            with quiet("mlflow"):
                self._client.log_image(self.run_id, image, artifact_file=f"images/{metric_key(name)}_step{int(step):06d}.png")
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
        plain = copy.deepcopy(_unwrap(model)).cpu().eval()
        plain = plain.to(memory_format=torch.contiguous_format)
        self.model_uri = log_pytorch_model(self._client, self.experiment_id, self.run_id, plain, name=name)
        return self.model_uri
