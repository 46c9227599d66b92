"""``clearbg tune``: Optuna trials as MLflow child runs, pruning, the best config, reruns."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from clearbg.cli import cli
from clearbg.train.checkpoint import checkpoint_paths
from clearbg.train.config import TrainConfig, load_config
from clearbg.train.tune import TuneError, best_config_path, tune

SPACE = {
    "lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "batch_size": {"choices": [2, 4]},
    "loss.iou": {"low": 0.0, "high": 1.0},
}


@pytest.fixture(autouse=True)
def one_thread():
    # 64x64 u2netp steps are tiny: a second OpenMP thread only adds barrier waits on 2 cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared_data) -> str:
    """8 train + 4 val real fashion pairs at 64x64 (the tiny subset, splits assigned here)."""
    from clearbg.data.prepare import PrepareConfig, prepare_dataset

    root = shared_data / "fashion"
    rows = pd.read_csv(root / "manifest.csv")
    rows = rows[rows["tiny"] == 1].sort_values("id").head(12).reset_index(drop=True)
    rows["image"] = [str(root / p) for p in rows["image"]]
    rows["mask"] = [str(root / p) for p in rows["mask"]]
    rows["split"] = ["train"] * 8 + ["val"] * 4
    work = tmp_path_factory.mktemp("tune-data")
    rows.to_csv(work / "pairs.csv", index=False)
    prepare_dataset(str(work / "pairs.csv"), str(work / "ds"), PrepareConfig(sizes=[(64, 64)]), workers=1)
    return str(work / "ds")


BASE = ("model=u2netp", "init=scratch", "size=64", "epochs=1", "max_steps=2", "workers=0", "tensorboard=false",
        "device=cpu", "warmup_steps=0")


def base_config(dataset: str, out: Path) -> TrainConfig:
    return load_config(overrides=[f"data={dataset}", f"out={out}", *BASE])


def runs_of(out: Path, experiment: str = "clearbg"):
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=100)


def test_trials_are_child_runs_of_one_parent_and_a_rerun_continues(tmp_path, dataset, make_mlflow_store):
    make_mlflow_store(tmp_path)
    config = base_config(dataset, tmp_path)

    study = tune(config, 2, study_name="s1", search_space=SPACE, pruner=optuna.pruners.NopPruner())

    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert (tmp_path / "optuna.db").is_file()  # next to the MLflow store
    runs = runs_of(tmp_path)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.run_name == "s1" and parent.info.status == "FINISHED"
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    by_trial = {int(c.data.tags["optuna.trial"]): c for c in children}
    for trial in study.trials:
        child = by_trial[trial.number]
        assert float(child.data.params["lr"]) == pytest.approx(trial.params["lr"])
        assert int(child.data.params["batch_size"]) == trial.params["batch_size"]
        assert float(child.data.params["loss.iou"]) == pytest.approx(trial.params["loss.iou"])
        assert child.data.metrics["val/iou"] == pytest.approx(trial.value)
        assert trial.user_attrs["mlflow_run_id"] == child.info.run_id
    assert parent.data.metrics["tune/best_val/iou"] == pytest.approx(study.best_value)

    best = load_config(best_config_path(config, "s1"))
    assert isinstance(best, TrainConfig)
    assert best.lr == pytest.approx(study.best_params["lr"])
    assert best.batch_size == study.best_params["batch_size"]
    assert best.loss.iou == pytest.approx(study.best_params["loss.iou"])
    assert best.run_name is None and best.epochs == config.epochs  # the base config, not a trial's
    assert best.tracking_uri is None and best.resume == "auto"
    latest, best_weights = checkpoint_paths(tmp_path / "s1-trial-0000")
    assert best_weights.is_file() and not latest.exists()  # trials never resume: no full state kept

    # `clearbg tune` with the same study name continues it, under the same parent run, and
    # prints every trial and the best parameters.
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    args = ["tune", "--data", dataset, "--trials", "1", "--study", "s1", "--space", str(space),
            "--set", f"out={tmp_path}"]
    for item in BASE:
        args += ["--set", item]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["trial", "state", "val/iou", "seconds", "batch_size", "loss.iou", "lr"]
    assert [line.split()[:2] for line in lines[1:4]] == [["0", "COMPLETE"], ["1", "COMPLETE"], ["2", "COMPLETE"]]
    assert "best: trial" in result.output and "lr = " in result.output
    assert str(best_config_path(config, "s1")) in result.output
    again = optuna.load_study(study_name="s1", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(again.trials) == 3 and again.trials[2].params != again.trials[0].params
    runs = runs_of(tmp_path)
    assert [r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags] == [parent.info.run_id]
    assert sum(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in runs) == 3


def test_pruned_trials_end_killed_and_leave_no_best_config(tmp_path, dataset, make_mlflow_store, monkeypatch):
    # The store named by MLFLOW_TRACKING_URI holds the parent and the trials alike (and the study).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", make_mlflow_store(tmp_path / "store"))
    config = base_config(dataset, tmp_path)
    # IoU is never above 1.1: every trial is pruned at its first report.
    study = tune(config, 2, study_name="s2", search_space=SPACE, pruner=optuna.pruners.ThresholdPruner(lower=1.1))

    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(t.intermediate_values for t in study.trials)  # they reported before being stopped
    runs = runs_of(tmp_path / "store")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert not (tmp_path / "mlflow.db").exists() and (tmp_path / "store" / "optuna.db").is_file()
    assert len(children) == 2
    assert {r.info.status for r in children} == {"KILLED"}
    assert {r.data.tags["optuna.state"] for r in children} == {"PRUNED"}
    assert not best_config_path(config, "s2").exists()
    assert (best_config_path(config, "s2").parent / "trials.csv").is_file()


def test_a_bad_search_space_fails_before_any_training(tmp_path, dataset):
    config = base_config(dataset, tmp_path)
    with pytest.raises(TuneError, match="loss.nonsense"):
        tune(config, 1, search_space={"loss.nonsense": {"low": 0, "high": 1}})
    with pytest.raises(TuneError, match="'lr'.*choices"):
        tune(config, 1, search_space={"lr": {"high": 1}})
    with pytest.raises(TuneError, match="batch_size"):
        tune(config, 1, search_space={"batch_size": {"choices": [0, 4]}})
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()
