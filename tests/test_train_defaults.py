"""What a new user gets from `clearbg train` with the defaults: fine-tuning that keeps the official
weights' quality, a loud warning when a run makes the model worse, one MLflow run per training run
across resumes, and a way to train on a source whose rows all carry one split."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from clearbg.data.dataset import PairDataset
from clearbg.data.manifest import DatasetError
from clearbg.data.prepare import PrepareConfig, prepare_dataset
from clearbg.train.config import TrainConfig, load_config
from clearbg.train.loop import train


@pytest.fixture(scope="module")
def source(tiny_pairs_csv) -> str:
    """6 real fashion pairs whose source rows all say split=test, like the tiny subset."""
    return tiny_pairs_csv(6, split="test")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, source) -> str:
    out = str(tmp_path_factory.mktemp("defaults") / "ds")
    prepare_dataset(source, out, PrepareConfig(sizes=[(64, 64)], split=(0.5, 0.5, 0.0), resplit=True), workers=1)
    return out


def _config(prepared: str, tmp_path, *overrides: str) -> TrainConfig:
    return load_config(overrides=[f"data={prepared}", f"out={tmp_path}", "size=64", "batch_size=3", "workers=0",
                                  "tracking_uri=off", "tensorboard=false", "precision=fp32", *overrides])


def test_the_default_learning_rate_depends_on_the_initial_weights(tmp_path):
    assert TrainConfig(data="ds").peak_lr == 1e-4  # official weights: fine-tune gently
    assert TrainConfig(data="ds", init="scratch").peak_lr == 1e-3
    assert TrainConfig(data="ds", init="runs/a/best.pt").peak_lr == 1e-4
    assert TrainConfig(data="ds", lr=3e-4).peak_lr == 3e-4


@pytest.mark.slow
def test_default_fine_tuning_keeps_the_official_quality(prepared, tmp_path):
    result = train(_config(prepared, tmp_path, "max_steps=5", "epochs=5"), progress=False)
    assert result.start_val_iou is not None and result.start_val_iou > 0.8
    # lr 1e-3 took u2netp from 0.94 to 0.41 in 5 steps; the default must not wreck it.
    assert result.metrics["val/iou"] > result.start_val_iou - 0.03, (result.start_val_iou, result.metrics)


@pytest.mark.slow
def test_a_run_that_ends_below_its_start_says_so_loudly(prepared, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="clearbg.train"):
        result = train(_config(prepared, tmp_path, "max_steps=2", "lr=0.05", "warmup_steps=0"), progress=False)
    assert result.metrics["val/iou"] < result.start_val_iou
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "BELOW" in warning and "lower the learning rate" in warning


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_mlflow_run(prepared, tmp_path, make_mlflow_store):
    from mlflow import MlflowClient

    uri = make_mlflow_store(tmp_path)
    base = ["epochs=3", "init=scratch", f"tracking_uri={uri}", "val_every=0"]
    first = train(_config(prepared, tmp_path, "max_steps=1", *base), progress=False)
    second = train(_config(prepared, tmp_path, "max_steps=3", *base), progress=False)  # a larger max_steps later
    assert (first.steps, second.steps) == (1, 3)
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    history = client.get_metric_history(runs[0].info.run_id, "train/loss")
    assert len(history) >= 2  # both invocations logged into the one run


def test_a_source_split_can_be_overridden_and_the_error_says_how(source, tmp_path):
    kept = str(tmp_path / "kept")
    prepare_dataset(source, kept, PrepareConfig(sizes=[(32, 32)]), workers=1)
    with pytest.raises(DatasetError, match=r"splits present: test\).*--split 0.8,0.1,0.1 --restart"):
        PairDataset(kept, split="train")
    resplit = str(tmp_path / "resplit")
    prepare_dataset(source, resplit, PrepareConfig(sizes=[(32, 32)], split=(0.5, 0.5, 0.0), resplit=True), workers=1)
    splits = set(pd.read_parquet(f"{resplit}/manifest.parquet")["split"])
    assert splits == {"train", "val"}
    assert len(PairDataset(resplit, split="train")) > 0


@pytest.mark.slow
def test_profile_says_where_the_time_goes(prepared, tmp_path, make_mlflow_store):
    from mlflow import MlflowClient

    uri = make_mlflow_store(tmp_path)
    result = train(_config(prepared, tmp_path, "max_steps=4", "profile=2", "init=scratch", "val_every=0",
                           f"tracking_uri={uri}", "tensorboard=true"), progress=False)
    text = (tmp_path / "u2netp-ds" / "profile.txt").read_text()
    for phase in ("data", "forward", "backward", "optimizer"):
        assert f"\n{phase} " in text
    assert "2 steps after 1 warm-up step" in text and "top operators" in text and "convolution" in text
    traces = list((tmp_path / "u2netp-ds" / "tensorboard" / "profile").glob("*.pt.trace.json*"))
    assert traces, "no profiler trace for TensorBoard"
    client = MlflowClient(uri)
    run = client.search_runs([e.experiment_id for e in client.search_experiments()])[0]
    assert "profile.txt" in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert result.steps == 4


def test_freeze_bn_keeps_the_batchnorm_statistics(prepared, tmp_path):
    from clearbg.train.checkpoint import load_checkpoint

    def running_means(*overrides):
        result = train(_config(prepared, tmp_path / "_".join(overrides), "init=scratch", "max_steps=2", "val_every=0",
                               *overrides), progress=False)
        state = load_checkpoint(result.last_checkpoint)["model"]
        return {k: v for k, v in state.items() if k.endswith("running_mean")}

    frozen, trained = running_means("freeze_bn=true"), running_means("freeze_bn=false")
    assert all(v.abs().max() == 0 for v in frozen.values())  # a scratch init's statistics, untouched
    assert any(v.abs().max() > 0 for v in trained.values())
