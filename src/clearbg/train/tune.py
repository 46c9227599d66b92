"""Hyperparameter search with Optuna: each trial one ``train`` run, one MLflow child run.

The Carvana seed tuned its U-Net with SageMaker's tuner over learning rate, batch size and
epochs. Here Optuna's TPE sampler searches the learning rate (log scale), the batch size
(categorical), the IoU and boundary loss weights and the augmentation strength (the search
space is a plain dict, overridable). Each trial calls the one training function,
``clearbg.train.loop.train``, with its own config; after every validation it reports ``val/iou``
to Optuna and stops early when the pruner (median of the earlier trials at the same epoch by
default) says the trial is worse than the others. Pruned trials end their MLflow run KILLED and
are tagged ``optuna.state=PRUNED``.

Where things go, so that a rerun with the same study name continues the study:

- the Optuna study: ``optuna.db`` (SQLite) next to the MLflow store (the folder of a
  ``sqlite:///.../mlflow.db`` tracking URI, else ``config.out``);
- MLflow, in the store training would use (``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else
  ``<out>/mlflow.db``; resolved once, so the parent and all trials share it): one parent run
  named after the study (kept across reruns; its id is a study user attribute), one child run
  per trial (``<study>-trial-NNNN``, ``mlflow.parentRunId`` set);
- ``<out>/tune/<study>/best.yaml``: the input config with the best trial's parameters,
  loadable with ``load_config`` (``clearbg train --config best.yaml``), and ``trials.csv``;
- each trial's run folder ``<out>/<study>-trial-NNNN`` keeps its ``best.pt`` (weights); its
  resumable ``latest.pt`` is deleted when the trial ends (trials never resume).

Example:
    >>> config = load_config(overrides=["data=prepared/", "epochs=3", "size=160"])  # doctest: +SKIP
    >>> study = tune(config, n_trials=20)                                           # doctest: +SKIP
    >>> study.best_params                                                           # doctest: +SKIP
    {'lr': 0.0021, 'batch_size': 8, 'loss.iou': 0.43, 'loss.boundary': 0.12, 'augment.strength': 0.8}
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearbg.errors import ClearbgError
from clearbg.train.config import ConfigError, TrainConfig

if TYPE_CHECKING:
    import optuna

__all__ = ["DEFAULT_SEARCH_SPACE", "TuneError", "apply_params", "best_config_path", "suggest", "tune"]

OBJECTIVE = "val/iou"  # what trials report and the study maximises
PARENT_ATTR = "mlflow_parent_run_id"  # study user attribute: the parent run, reused by reruns

# Parameter name (a dotted TrainConfig key) -> its range. {"low", "high"[, "log"][, "step"]}:
# floats (ints when both bounds are ints and there is no "log"), {"choices": [...]}: categorical.
# The lr range is for training from scratch; from pretrained weights it is a tenth of it
# (default_search_space): 1e-3 and above wreck the official weights in a few steps.
DEFAULT_SEARCH_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "batch_size": {"choices": [4, 8, 16]},
    "loss.iou": {"low": 0.0, "high": 1.0},
    "loss.boundary": {"low": 0.0, "high": 1.0},
    "augment.strength": {"low": 0.0, "high": 1.5},
}


class TuneError(ClearbgError):
    """The search space or the study setup is invalid."""


def default_search_space(base: TrainConfig) -> dict[str, dict[str, Any]]:
    """``DEFAULT_SEARCH_SPACE``, with the lr range scaled down tenfold when fine-tuning."""
    space = dict(DEFAULT_SEARCH_SPACE)
    if base.init != "scratch":
        space["lr"] = {"low": 1e-5, "high": 1e-3, "log": True}
    return space


def suggest(trial: optuna.trial.BaseTrial, search_space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Draw one value per parameter of ``search_space`` from ``trial``.

    Raises:
        TuneError: a range that is neither ``{"choices": [...]}`` nor ``{"low", "high"}``.

    Example:
        >>> import optuna
        >>> suggest(optuna.trial.FixedTrial({"lr": 0.01}), {"lr": {"low": 1e-4, "high": 1e-1, "log": True}})
        {'lr': 0.01}
    """
    params: dict[str, Any] = {}
    for name, spec in search_space.items():
        if not isinstance(spec, Mapping):
            raise TuneError(f"search space entry {name!r} must be a mapping like {{low: 0, high: 1}} or {{choices: [...]}}")
        if "choices" in spec:
            choices = list(spec["choices"])
            if not choices:
                raise TuneError(f"search space entry {name!r} has no choices")
            params[name] = trial.suggest_categorical(name, choices)
        elif "low" in spec and "high" in spec:
            low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
            if not low <= high:
                raise TuneError(f"search space entry {name!r}: low ({low}) must not exceed high ({high})")
            if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool) and not log:
                params[name] = trial.suggest_int(name, low, high, step=int(step or 1))
            else:
                params[name] = trial.suggest_float(name, float(low), float(high), log=log, step=step)
        else:
            raise TuneError(
                f"search space entry {name!r} must have 'choices' or 'low' and 'high' (and optionally 'log'), got {dict(spec)}"
            )
    return params


def apply_params(config: TrainConfig, params: Mapping[str, Any], **fields: Any) -> TrainConfig:
    """A copy of ``config`` with dotted keys (``lr``, ``loss.iou``) set, validated as a whole.

    Args:
        config: the base config (not changed).
        params: dotted TrainConfig keys -> values.
        fields: more top-level fields to set (``run_name=...``).

    Raises:
        ConfigError: an unknown key or a value of the wrong type, naming the key.

    Example:
        >>> base = TrainConfig(data="ds")
        >>> apply_params(base, {"lr": 0.01, "loss.iou": 0.5}).loss.iou
        0.5
    """
    values = config.to_dict()
    for key, value in {**params, **fields}.items():
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config key {key!r} in the search space ({part!r} is not a section)")
            node = node[part]
        node[parts[-1]] = value
    return TrainConfig.from_dict(values, source="the search space")


def _check_space(config: TrainConfig, search_space: Mapping[str, Mapping[str, Any]]) -> None:
    # Fail before the first trial, not after an hour of training: every key must exist and
    # both ends of every range must make a valid config.
    import optuna

    for name, spec in search_space.items():
        ends = list(spec.get("choices", [])) if isinstance(spec, Mapping) else []
        if isinstance(spec, Mapping) and "low" in spec and "high" in spec:
            ends = [spec["low"], spec["high"]]
        for value in ends:
            suggest(optuna.trial.FixedTrial({name: value}), {name: spec})
            try:
                apply_params(config, {name: value})
            except ConfigError as err:
                raise TuneError(f"search space entry {name!r}: {err}") from err
        if not ends:
            suggest(optuna.trial.FixedTrial({}), {name: spec})  # raises the shape error


def _tracking_uri(config: TrainConfig) -> str:
    # The rule training uses, resolved once here so the parent run and every trial share one store.
    from clearbg.mlflow_store import resolve_tracking_uri

    return resolve_tracking_uri(config.tracking_uri, config.out)


def default_study_name(config: TrainConfig) -> str:
    """``tune-<model>-<dataset folder>``: stable, so a rerun continues the same study."""
    data = Path(str(config.data).rstrip("/")).name or "data"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"tune-{config.model}-{data}")


def default_storage(config: TrainConfig) -> str:
    """``sqlite:///<folder of the MLflow SQLite store, else out>/optuna.db``."""
    from clearbg.mlflow_store import sqlite_path

    db = sqlite_path(_tracking_uri(config))
    folder = db.parent if db is not None else Path(config.out)
    return f"sqlite:///{folder.resolve() / 'optuna.db'}"


def best_config_path(config: TrainConfig, study_name: str) -> Path:
    """Where ``tune`` writes the best config: ``<out>/tune/<study>/best.yaml``."""
    return Path(config.out) / "tune" / study_name / "best.yaml"


def tune(
    config: TrainConfig,
    n_trials: int,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    timeout: float | None = None,
    search_space: Mapping[str, Mapping[str, Any]] | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Search hyperparameters: ``n_trials`` training runs, each an MLflow child run.

    Args:
        config: the base config; every trial is this config with the sampled parameters, its
            own ``run_name`` (``<study>-trial-NNNN``) and ``resume="never"``.
        n_trials: trials to run now (a rerun adds this many to the stored study).
        storage: Optuna storage URL. Default: ``optuna.db`` beside the MLflow SQLite store.
        study_name: default ``tune-<model>-<dataset folder>``; the same name continues a study.
        timeout: stop starting trials after this many seconds.
        search_space: dotted config key -> ``{"low", "high"[, "log"]}`` or ``{"choices"}``
            (default ``DEFAULT_SEARCH_SPACE``).
        pruner: default ``MedianPruner(n_startup_trials=3, n_warmup_steps=1)``: a trial is
            stopped when its val/iou after the 2nd validation or later is below the median of
            earlier trials at the same epoch.

    Returns:
        The study (``study.best_params``, ``study.trials``). Trials that ran out of memory are
        marked FAIL and the search goes on.

    Raises:
        TuneError: an invalid search space (before any training).
        ClearbgError: from training (data, model, tracking problems) — the study stops.

    Example:
        >>> study = tune(load_config(overrides=["data=ds", "epochs=2"]), n_trials=10)  # doctest: +SKIP
    """
    import optuna
    import torch

    from clearbg.mlflow_store import sqlite_path
    from clearbg.train.checkpoint import checkpoint_paths
    from clearbg.train.loop import run_dir_for, train
    from clearbg.train.tracking import Tracker

    if n_trials < 1:
        raise TuneError(f"n_trials must be >= 1, got {n_trials}")
    space = dict(search_space if search_space is not None else default_search_space(config))
    _check_space(config, space)
    base = config  # what best.yaml is written from: the user's settings, not resolved ones
    tracking_uri = _tracking_uri(config)
    config = dataclasses.replace(config, tracking_uri=tracking_uri)
    study_name = study_name or default_study_name(config)
    storage = storage or default_storage(config)
    optuna_db = sqlite_path(storage)
    if optuna_db is not None:
        optuna_db.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction="maximize", load_if_exists=True,
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    # A seeded sampler restarted on a stored study would replay the same first draws; offset
    # the seed by the trials already there so a rerun explores new points, reproducibly.
    study.sampler = optuna.samplers.TPESampler(seed=config.seed + len(study.trials))
    out_dir = best_config_path(config, study_name).parent
    parent = _ParentRun(base, study, out_dir, space, tracking_uri)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        trial_config = apply_params(config, params, run_name=f"{study_name}-trial-{trial.number:04d}", resume="never")
        trial.set_user_attr("run_name", trial_config.run_name)
        tracker = Tracker(trial_config, run_dir_for(trial_config),
                          parent_run_id=parent.run_id, nested=parent.run_id is not None)
        seen: dict[str, float] = {}

        def on_epoch_end(epoch: int, metrics: dict) -> None:
            if tracker.run_id is not None:
                trial.set_user_attr("mlflow_run_id", tracker.run_id)
            value = metrics.get(OBJECTIVE)
            if value is None or not math.isfinite(float(value)):
                return  # no validation this epoch
            seen["last"] = float(value)
            trial.report(float(value), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"val/iou {float(value):.4f} at epoch {epoch} is below the pruner's bar")

        state = "FAIL"
        try:
            result = train(trial_config, tracker=tracker, on_epoch_end=on_epoch_end)
            state = "COMPLETE"
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        finally:
            tracker.end({"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED"))  # no-op if train closed it
            parent.tag_child(tracker.run_id, trial.number, state)
            if tracker.run_id is not None:
                trial.set_user_attr("mlflow_run_id", tracker.run_id)
            # Trials never resume (resume=never), so their full-state latest.pt (weights, Adam
            # state: 3x the model) is dead weight; best.pt (weights only) stays.
            checkpoint_paths(run_dir_for(trial_config))[0].unlink(missing_ok=True)
        value = result.best_val_iou if result.best_val_iou is not None else seen.get("last")
        if value is None:
            raise TuneError(f"trial {trial.number} finished without a validation IoU; set val_every >= 1")
        parent.log_trial(trial.number, float(value))
        return float(value)

    status = "FAILED"
    try:
        study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(torch.OutOfMemoryError,),
                       gc_after_trial=True)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _write_results(study, base, out_dir)
        parent.finish(study, out_dir, status)
    return study


def _write_results(study: optuna.Study, config: TrainConfig, out_dir: Path) -> None:
    import optuna

    out_dir.mkdir(parents=True, exist_ok=True)
    frame = study.trials_dataframe(attrs=("number", "state", "value", "duration", "params", "user_attrs"))
    frame.to_csv(out_dir / "trials.csv", index=False)
    if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        best = apply_params(config, study.best_params)
        (out_dir / "best.yaml").write_text(
            f"# best of study {study.study_name!r}: trial {study.best_trial.number}, "
            f"{OBJECTIVE} {study.best_value:.4f}\n" + best.to_yaml()
        )


class _ParentRun:
    """The study's MLflow parent run: created once, reused by reruns (a study user attribute)."""

    def __init__(self, config: TrainConfig, study: optuna.Study, out_dir: Path, space: Mapping, tracking_uri: str):
        self.run_id: str | None = None
        self.client = None
        from clearbg.mlflow_store import connect, is_off

        if is_off(tracking_uri):
            return
        from mlflow.exceptions import MlflowException

        from clearbg.train.tracking import Tracker

        self.client = connect(tracking_uri)
        previous = study.user_attrs.get(PARENT_ATTR)
        if previous is not None:
            try:
                run = self.client.get_run(previous)
                if run.info.lifecycle_stage != "deleted":
                    self.run_id = previous
                    self.client.update_run(previous, status="RUNNING")
            except MlflowException:  # the store was wiped: start a new parent
                self.run_id = None
        if self.run_id is None:
            tracker = Tracker(dataclasses.replace(config, run_name=study.study_name, tracking_uri=tracking_uri,
                                                  tensorboard=False, resume="never"), out_dir)
            tracker.start({"base": config.to_dict(), "search_space": {k: dict(v) for k, v in space.items()}})
            self.run_id = tracker.run_id
            study.set_user_attr(PARENT_ATTR, self.run_id)
        self.client.set_tag(self.run_id, "optuna.study", study.study_name)

    def tag_child(self, run_id: str | None, number: int, state: str) -> None:
        if self.client is None or run_id is None:
            return
        self.client.set_tag(run_id, "optuna.trial", str(number))
        self.client.set_tag(run_id, "optuna.state", state)

    def log_trial(self, number: int, value: float) -> None:
        if self.client is not None:
            self.client.log_metric(self.run_id, "trial/" + OBJECTIVE, value, step=number)

    def finish(self, study: optuna.Study, out_dir: Path, status: str) -> None:
        if self.client is None:
            return
        import optuna

        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
        self.client.log_metric(self.run_id, "tune/trials_complete", len(done))
        self.client.log_metric(self.run_id, "tune/trials_pruned", len(pruned))
        if done:
            self.client.log_metric(self.run_id, "tune/best_" + OBJECTIVE, study.best_value)
            self.client.set_tag(self.run_id, "optuna.best_trial", str(study.best_trial.number))
            for key, value in study.best_params.items():
                self.client.set_tag(self.run_id, f"best.{key}", str(value))
        for name in ("best.yaml", "trials.csv"):
            if (out_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(out_dir / name))
        self.client.set_terminated(self.run_id, status=status)
