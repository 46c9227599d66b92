"""Training: one typed config, one loop, exact resume, DDP, tracking.

``clearbg.train.config`` (TrainConfig, load_config), ``clearbg.train.loop`` (train ->
TrainResult), ``clearbg.train.checkpoint``, ``clearbg.train.losses``; ``process_group``, ``spark_launcher``, ``schedule``, ``samplers``, ``model_init``,
``tracking``, ``batch_size`` and ``tune`` around them. Submodules are imported on use, so
``import clearbg.train`` stays cheap (``python -m clearbg.train`` is the torchrun entry).

Example:
    >>> from clearbg.train import load_config, train
    >>> result = train(load_config(overrides=["data=prepared/", "epochs=2"]))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clearbg.train.config import LossConfig, TrainConfig, load_config
    from clearbg.train.spark_launcher import run_on_spark
    from clearbg.train.loop import TrainResult, train

__all__ = ["LossConfig", "TrainConfig", "TrainResult", "load_config", "run_on_spark", "train"]

_WHERE = {"LossConfig": "config", "TrainConfig": "config", "load_config": "config", "TrainResult": "loop", "train": "loop",
          "run_on_spark": "spark_launcher"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"clearbg.train.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'clearbg.train' has no attribute {name!r}")
