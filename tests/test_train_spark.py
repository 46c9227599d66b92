"""The same training function on Spark: ``TorchDistributor`` on a local[2] Spark, on the driver
(local mode) and as barrier tasks on the executors (cluster mode)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

pytest.importorskip("pyspark")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared_data) -> str:
    """16 train + 8 val real fashion pairs at 64x64 (the tiny subset, splits assigned here)."""
    from clearbg.data.prepare import PrepareConfig, prepare_dataset

    root = shared_data / "fashion"
    rows = pd.read_csv(root / "manifest.csv")
    rows = rows[rows["tiny"] == 1].sort_values("id").head(24).reset_index(drop=True)
    rows["image"] = [str(root / p) for p in rows["image"]]
    rows["mask"] = [str(root / p) for p in rows["mask"]]
    rows["split"] = ["train"] * 16 + ["val"] * 8
    work = tmp_path_factory.mktemp("spark-data")
    rows.to_csv(work / "pairs.csv", index=False)
    prepare_dataset(str(work / "pairs.csv"), str(work / "ds"), PrepareConfig(sizes=[(64, 64)]), workers=1)
    return str(work / "ds")


@pytest.mark.parametrize("local_mode", [True, False], ids=["driver", "executors"])
def test_torch_distributor_runs_the_training_function_on_two_processes(dataset, tmp_path, local_mode):
    from clearbg.train.config import load_config
    from clearbg.train.spark_launcher import run_on_spark
    from clearbg.train.loop import TrainResult

    config = load_config(None, [
        f"data={dataset}", f"out={tmp_path}", "run_name=spark", "model=u2netp", "init=scratch", "size=64",
        "batch_size=4", "epochs=1", "workers=0", "augment.strength=0", "tracking_uri=off",
        "tensorboard=false", "device=cpu", "precision=fp32",
    ])
    result = run_on_spark(config, num_processes=2, local_mode=local_mode)

    assert isinstance(result, TrainResult)  # rank 0's return value, unpickled on the driver
    # One epoch of 16 images at 4 per process and step took 2 steps: two processes shared it
    # (one process would have needed 4).
    assert result.steps == 2 and result.epochs == 1
    assert 0.0 <= result.best_val_iou <= 1.0
    assert torch.load(result.last_checkpoint, weights_only=False)["position"]["step"] == 2
    assert result.run_dir == str(tmp_path / "spark")
