"""Training runs land in MLflow (embedded SQLite store or a real server) and TensorBoard.

Everything is checked by reading the store back: params, per-epoch metrics, an image artifact, the
logged model (loaded again with ``mlflow.pytorch.load_model`` and run), TensorBoard scalars.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clearbg.errors import ClearbgError
from clearbg.mlflow_store import default_tracking_uri, flatten_params
from clearbg.train.config import load_config
from clearbg.train.tracking import RUN_FILE, Tracker

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402


# --------------------------------------------------------------------------- fixtures


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
    work = tmp_path_factory.mktemp("tracking-data")
    rows.to_csv(work / "pairs.csv", index=False)
    prepare_dataset(str(work / "pairs.csv"), str(work / "ds"), PrepareConfig(sizes=[(64, 64)]), workers=1)
    return str(work / "ds")


@pytest.fixture
def one_thread():
    """Train with one intra-op thread: with other processes busy on the 2 cores, two OpenMP
    threads spin against each other and a step takes ~10x longer (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def out(tmp_path, make_mlflow_store) -> Path:
    """A fresh output folder whose default store already exists (a copy of an empty one)."""
    make_mlflow_store(tmp_path)
    return tmp_path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def _server_process(tmp_path_factory):
    """Launch a real ``mlflow server`` on a loopback port as the module starts, so its ~7 s boot
    (schema migrations included) overlaps the other tests; ``mlflow_server`` waits for it.
    SQLite backend, artifacts proxied into a local folder. Stopped by its PID afterwards."""
    work = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe) if exe.exists() else "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
           "--artifacts-destination", str(work / "artifacts")]
    log = open(work / "server.log", "wb")
    # Its own process group: `mlflow server` runs uvicorn (and a job runner) as child processes.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc, f"http://127.0.0.1:{port}", work
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def mlflow_server(_server_process):
    """(url, artifacts folder) of the real server, once /health answers."""
    proc, url, work = _server_process
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{(work / 'server.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return url, work / "artifacts"
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"mlflow server not healthy within 120 s:\n{(work / 'server.log').read_text()}")
        time.sleep(0.2)


def _config(dataset: str, out: Path, *extra: str):
    return load_config(None, [
        f"data={dataset}", f"out={out}", "model=u2netp", "init=scratch", "size=64", "batch_size=4",
        "epochs=2", "workers=0", "warmup_steps=0", "device=cpu", "precision=fp32", *extra,
    ])


def _the_run(client: MlflowClient, experiment: str = "clearbg"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return exp, runs[0]


def _val_photo(dataset: str) -> torch.Tensor:
    from clearbg.data.dataset import PairDataset

    return PairDataset(dataset, split="val", size=64)[0]["image"][None]


# --------------------------------------------------------------------------- the real loop


def test_training_run_is_read_back_from_the_default_sqlite_store(dataset, out, one_thread):
    from clearbg.train.loop import train

    config = _config(dataset, out, "run_name=tracked", "loss.iou=0.5")
    result = train(config)

    client = MlflowClient(default_tracking_uri(out))
    assert client.tracking_uri == f"sqlite:///{out / 'mlflow.db'}"
    exp, run = _the_run(client)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tracked"
    assert Path(exp.artifact_location.removeprefix("file://")) == out / "mlartifacts"
    params = run.data.params
    assert params["model"] == "u2netp" and params["size"] == "64" and params["init"] == "scratch"
    assert float(params["resolved.lr"]) == config.peak_lr and float(params["loss.iou"]) == 0.5  # flattened nested config

    # Per-epoch metrics: one point per epoch, at increasing steps.
    for key in ("train/loss", "train/lr", "val/iou", "val/dice"):
        history = client.get_metric_history(run.info.run_id, key)
        assert len(history) == config.epochs, (key, history)
        assert [m.step for m in history] == sorted({m.step for m in history})
    ious = [m.value for m in client.get_metric_history(run.info.run_id, "val/iou")]
    assert all(0.0 <= v <= 1.0 for v in ious)
    assert max(ious) == pytest.approx(result.best_val_iou)

    # A prediction grid as an image artifact.
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images") if not a.is_dir]
    images += [f.path for d in client.list_artifacts(run.info.run_id, "images") if d.is_dir
               for f in client.list_artifacts(run.info.run_id, d.path)]
    assert any(p.endswith(".png") for p in images), images
    local = client.download_artifacts(run.info.run_id, next(p for p in images if p.endswith(".png")), str(out / "dl"))
    grid = np.asarray(Image.open(local))
    assert grid.ndim == 3 and grid.shape[2] == 3 and grid.shape[0] >= 64

    # The final model, in the run's experiment, loads back and predicts.
    models = client.search_logged_models([exp.experiment_id])
    assert [m.source_run_id for m in models] == [run.info.run_id]
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        model = mlflow.pytorch.load_model(f"models:/{models[0].model_id}")
    finally:
        mlflow.set_tracking_uri(None)
    with torch.no_grad():
        pred = model(_val_photo(dataset))
    pred = pred[0] if isinstance(pred, (tuple, list)) else pred
    assert pred.shape == (1, 1, 64, 64) and float(pred.min()) >= 0.0 and float(pred.max()) <= 1.0

    # TensorBoard: the same scalars per epoch, and the image grid.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(result.run_dir) / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "val/iou"} <= set(scalars), scalars
    tb_iou = [e.value for e in events.Scalars("val/iou")]
    assert tb_iou == pytest.approx(ious)
    assert events.Tags()["images"], "no image grid in TensorBoard"


def test_training_against_a_real_mlflow_server(dataset, tmp_path, mlflow_server, one_thread):
    from clearbg.train.loop import train

    url, artifacts = mlflow_server
    config = _config(dataset, tmp_path, f"tracking_uri={url}", "experiment=served", "epochs=1",
                     "tensorboard=false")
    train(config)

    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the embedded default
    client = MlflowClient(url)
    exp, run = _the_run(client, "served")
    assert run.info.status == "FINISHED"
    assert run.data.params["experiment"] == "served"
    assert len(client.get_metric_history(run.info.run_id, "val/iou")) == 1
    # Artifacts went through the server into its --artifacts-destination folder.
    files = [p for p in artifacts.rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" and run.info.run_id in p.parts for p in files), files
    assert any(p.name == "MLmodel" for p in files), files


# --------------------------------------------------------------------------- Tracker on its own


def test_disabled_tracker_and_other_ranks_write_nothing(tmp_path, monkeypatch):
    config = load_config(None, [f"data={tmp_path}", f"out={tmp_path / 'out'}"])
    for tracker in (Tracker(config, tmp_path / "out" / "a", enabled=False),
                    _on_rank(monkeypatch, 1, lambda: Tracker(config, tmp_path / "out" / "b"))):
        tracker.start(config.to_dict())
        tracker.log_metrics({"train/loss": 1.0}, step=1)
        tracker.log_image("val/samples", np.zeros((8, 8, 3), np.uint8), step=1)
        assert tracker.log_model(torch.nn.Conv2d(3, 1, 1)) is None
        tracker.end()
        assert tracker.run_id is None
    assert not (tmp_path / "out").exists()


def _on_rank(monkeypatch, rank: int, make):
    with monkeypatch.context() as mp:
        mp.setenv("RANK", str(rank))
        return make()


def test_interrupted_run_is_continued_and_children_nest(out):
    config = load_config(None, [f"data={out}", f"out={out}", "tensorboard=false"])
    first = Tracker(config, out / "run")
    first.start(config.to_dict())
    first.log_metrics({"train/loss": 0.9, "val/iou/shorts & tops": 0.5}, step=1)
    # No end(): the process was killed, the run stays RUNNING. A restart continues it.
    again = Tracker(config, out / "run")
    again.start(config.to_dict())
    assert again.run_id == first.run_id and again.resumed
    again.log_metrics({"train/loss": 0.7}, step=2)
    again.end()
    client = MlflowClient(default_tracking_uri(out))
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(first.run_id, "train/loss")] == [0.9, 0.7]
    assert run.data.metrics["val/iou/shorts _ tops"] == 0.5  # cluster name made legal for MLflow
    assert json.loads((out / "run" / RUN_FILE).read_text())["run_id"] == first.run_id

    # A finished run is not reopened, nor a pruned (KILLED) one; resume=never always opens a new one.
    fresh = Tracker(config, out / "run")
    fresh.start(config.to_dict())
    assert fresh.run_id != first.run_id and not fresh.resumed
    fresh.end("KILLED")
    after_pruned = Tracker(config, out / "run")
    after_pruned.start()
    assert after_pruned.run_id != fresh.run_id
    after_pruned.end("FAILED")
    never = Tracker(load_config(None, [f"data={out}", f"out={out}", "tensorboard=false", "resume=never"]), out / "run")
    never.start()  # the FAILED run would be continued by default, but not with resume=never
    assert never.run_id not in (first.run_id, fresh.run_id, after_pruned.run_id)

    # Optuna trials: child runs under a parent.
    child = Tracker(config, out / "trial-0", parent_run_id=never.run_id)
    child.start(config.to_dict())
    child.end()
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == never.run_id
    never.end()
    with pytest.raises(ClearbgError, match="active MLflow run"):
        Tracker(config, out / "trial-1", nested=True).start()


def test_a_custom_sqlite_store_keeps_its_artifacts_beside_it(tmp_path, make_mlflow_store, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where MLflow would put ./mlruns if left to itself
    uri = make_mlflow_store(tmp_path / "elsewhere")
    config = load_config(None, [f"data={tmp_path}", f"out={tmp_path / 'out'}", f"tracking_uri={uri}",
                                "tensorboard=false"])
    tracker = Tracker(config, tmp_path / "out" / "run")
    tracker.start()
    tracker.log_image("val/samples", np.full((8, 8, 3), 200, np.uint8), step=1)
    tracker.end()
    run = MlflowClient(uri).get_run(tracker.run_id)
    artifacts = tmp_path / "elsewhere" / "mlartifacts"
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(artifacts)
    assert [p.name for p in artifacts.rglob("*.png")] == ["samples_step000001.png"]  # images/val/...
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "out" / "mlflow.db").exists()


def test_bad_inputs_are_clear_errors(tmp_path):
    config = load_config(None, [f"data={tmp_path}", f"out={tmp_path}", "tracking_uri=off", "tensorboard=false"])
    tracker = Tracker(config, tmp_path / "run")
    with pytest.raises(ClearbgError, match="uint8"):
        tracker.log_image("grid", np.zeros((8, 8, 3), np.float32), step=0)
    assert not tracker.mlflow_on and not (tmp_path / "mlflow.db").exists()
    remote = load_config(None, [f"data={tmp_path}", "out=s3://bucket/runs"])
    with pytest.raises(ClearbgError, match="tracking_uri"):
        Tracker(remote, tmp_path / "run")
    assert flatten_params({"lr": 0.001, "loss": {"bce": 1.0}, "sizes": [1, 2]}) == {
        "lr": "0.001", "loss.bce": "1.0", "sizes": "[1, 2]"}
