"""Exact resume: a real training process killed with SIGKILL mid-epoch, resumed, ends with the
same weights as an uninterrupted run with the same seed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from clearbg.data.prepare import PrepareConfig, prepare_dataset
from clearbg.errors import ClearbgError
from clearbg.train.checkpoint import checkpoint_paths, load_checkpoint
from clearbg.train.config import load_config
from clearbg.train.loop import train

SIZE = 64
N_TRAIN, BATCH, EPOCHS = 12, 2, 2
STEPS_PER_EPOCH = N_TRAIN // BATCH
TOTAL = STEPS_PER_EPOCH * EPOCHS


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared_data) -> str:
    rows = pd.read_csv(shared_data / "fashion" / "manifest.csv")
    rows = rows[rows["tiny"] == 1].sort_values("id").head(N_TRAIN + 2)
    folder = tmp_path_factory.mktemp("resume")
    csv = folder / "pairs.csv"
    rows.assign(
        image=[str(shared_data / "fashion" / p) for p in rows["image"]],
        mask=[str(shared_data / "fashion" / p) for p in rows["mask"]],
        split=["train"] * N_TRAIN + ["val"] * 2,
    ).to_csv(csv, index=False)
    prepare_dataset(str(csv), str(folder / "ds"), PrepareConfig(sizes=[(SIZE, SIZE)]), workers=1)
    return str(folder / "ds")


def _command(dataset: str, out, run_name: str, workers: int) -> list[str]:
    settings = [
        f"out={out}", f"run_name={run_name}", f"size={SIZE}", f"batch_size={BATCH}", f"epochs={EPOCHS}",
        "checkpoint_every=2", f"workers={workers}", "tracking_uri=off", "tensorboard=false", "seed=7",
        "init=scratch", "lr=3e-3", "warmup_steps=2",  # full augmentation (the default): its randomness must resume too
    ]
    cmd = [sys.executable, "-m", "clearbg.train", "--data", dataset]
    for item in settings:
        cmd += ["--set", item]
    return cmd


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # same threads in every run: identical float sums


def _position(path) -> dict | None:
    try:
        return load_checkpoint(path)["position"]
    except ClearbgError:  # not written yet
        return None


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path, dataset):
    out = tmp_path / "runs"
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("straight", "killed", "resumed")}
    # The uninterrupted reference (no workers) runs beside the one we kill (2 workers).
    straight = subprocess.Popen(_command(dataset, out, "straight", 0), env=_env(), stdout=logs["straight"], stderr=subprocess.STDOUT)
    victim = subprocess.Popen(_command(dataset, out, "killed", 2), env=_env(), stdout=logs["killed"], stderr=subprocess.STDOUT)
    latest, _ = checkpoint_paths(out / "killed")
    deadline = time.monotonic() + 120
    try:
        while True:
            pos = _position(latest) if latest.is_file() else None
            if pos is not None and pos["step"] >= 2:
                victim.send_signal(signal.SIGKILL)  # a real kill: no handler, no cleanup
                break
            assert victim.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        killed_at = _position(latest)
        assert killed_at["epoch"] == 0 and 0 < killed_at["batch"] < STEPS_PER_EPOCH, killed_at  # mid-epoch
        # Resume: the same command (resume=auto finds latest.pt), now with 1 worker.
        resumed = subprocess.run(_command(dataset, out, "killed", 1), env=_env(), stdout=logs["resumed"],
                                 stderr=subprocess.STDOUT, timeout=240)
        assert resumed.returncode == 0, (tmp_path / "resumed.log").read_text()
        assert straight.wait(timeout=240) == 0, (tmp_path / "straight.log").read_text()
    finally:
        for proc in (straight, victim):
            if proc.poll() is None:
                proc.kill()
        for f in logs.values():
            f.close()

    a = load_checkpoint(checkpoint_paths(out / "straight")[0])
    b = load_checkpoint(latest)
    assert a["position"]["step"] == b["position"]["step"] == TOTAL
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), rtol=1e-5, atol=1e-6), key
    # The per-epoch train loss (summed over the epoch, across the kill) matches too.
    losses_a = [h["train/loss"] for h in a["position"]["history"]]
    losses_b = [h["train/loss"] for h in b["position"]["history"]]
    assert losses_a == pytest.approx(losses_b, rel=1e-5)
    assert "resuming" in (tmp_path / "resumed.log").read_text()


def _config(dataset, out, *more):
    base = [f"data={dataset}", f"out={out}", f"size={SIZE}", f"batch_size={BATCH}", "workers=0",
            "tracking_uri=off", "tensorboard=false", "init=scratch", "max_steps=1"]
    return load_config(overrides=base + list(more))


def test_a_finished_run_is_not_trained_again_and_a_different_seed_is_refused(tmp_path, dataset):
    torch.set_num_threads(1)
    first = train(_config(dataset, tmp_path))
    again = train(_config(dataset, tmp_path))  # resume=auto: latest.pt says the run is complete
    assert again.steps == first.steps == 1 and again.images_per_second == 0.0
    assert again.metrics == first.metrics
    with pytest.raises(ClearbgError, match="seed"):
        train(_config(dataset, tmp_path, "seed=5"))
    fresh = train(_config(dataset, tmp_path, "seed=5", "resume=never"))
    assert fresh.steps == 1
