"""Training on a Spark cluster: Spark's TorchDistributor starts one process per slot and each
runs the ordinary :func:`clearbg.train.loop.train` (a local ``local[N]`` session when none is given)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clearbg.errors import ClearbgError
from clearbg.spark import local_spark
from clearbg.train.config import TrainConfig
from clearbg.train.loop import TrainResult, train
from clearbg.train.process_group import cleanup

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _train_on_worker(config_dict: dict[str, Any]) -> TrainResult:
    # Runs inside each TorchDistributor process (a torchrun worker); a module-level function, so
    # cloudpickle sends it by reference and the worker imports this module.
    config = TrainConfig.from_dict(config_dict)
    try:
        return train(config)
    finally:
        cleanup()


def run_on_spark(config: TrainConfig, num_processes: int, use_gpu: bool = False,
                 spark: SparkSession | None = None, local_mode: bool = True) -> TrainResult:
    """Run :func:`clearbg.train.loop.train` on Spark with ``TorchDistributor``.

    Each of ``num_processes`` workers rebuilds the config and calls the same training function
    as the CLI and torchrun; they form a gloo (CPU) or NCCL (``use_gpu``) group. With
    ``spark=None`` a local[2] SparkSession bound to 127.0.0.1 (UI off) is started and stopped.

    Args:
        config: the training config (must be picklable through ``to_dict``).
        num_processes: number of training processes (one per GPU with ``use_gpu``).
        use_gpu: train on CUDA with NCCL; each process gets one GPU.
        spark: an active SparkSession to use (left running), or None for a local one.
        local_mode: True: the processes run on the driver node (one multi-GPU machine);
            False: as Spark barrier tasks on the executors (a cluster). On a cluster,
            ``config.out`` and ``config.data`` must be reachable from every node (a shared
            mount such as /dbfs, or s3:// for the data), since rank 0 writes the checkpoints.

    Returns:
        Rank 0's :class:`~clearbg.train.loop.TrainResult`.

    Raises:
        ClearbgError: ``num_processes`` < 1.

    Example:
        >>> result = run_on_spark(load_config(overrides=["data=ds", "max_steps=2"]), num_processes=2)
    """
    from pyspark.ml.torch.distributor import TorchDistributor

    if num_processes < 1:
        raise ClearbgError(f"num_processes must be >= 1, got {num_processes}")
    own = spark is None
    if own:
        session = local_spark("clearbg-train")
    else:
        session = spark
    try:
        distributor = TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu)
        return distributor.run(_train_on_worker, config.to_dict())
    finally:
        if own:
            session.stop()
