"""Evaluation: count-first mask metrics, full-resolution evaluation runs and their report.

* ``metrics``: pixel counts and IoU/Dice from counts (shared with training validation).
* ``image_metrics`` (the module): ``image_metrics()``, every score of one image (IoU, Dice, precision, recall, MAE, boundary F,
  error regions).
* ``run``: ``evaluate_model`` -> ``Evaluation`` (per image, per group, worst cases).
* ``report``: ``write_report`` (one self-contained HTML, one model or two side by side), drawn
  with ``charts`` (matplotlib) and ``tiles`` (worst-case thumbnails).
* ``tracking``: ``log_evaluation`` (a report folder to MLflow: artifacts and metrics).
* ``compare``: ``compare_evaluations`` (the paired champion/challenger gate).

The heavy parts (torch models, matplotlib, MLflow) load on first use of their name.
"""

from __future__ import annotations

import importlib
from typing import Any

from clearbg.evaluate.metrics import (
    EMPTY_SCORE,
    confusion_counts,
    dice_from_counts,
    iou_from_counts,
)

# name -> module that defines it, imported when the name is first used
_LAZY = {
    "Evaluation": "clearbg.evaluate.run",
    "evaluate_model": "clearbg.evaluate.run",
    "parse_data_arg": "clearbg.evaluate.run",
    "write_report": "clearbg.evaluate.report",
    "log_evaluation": "clearbg.evaluate.tracking",
    "compare_evaluations": "clearbg.evaluate.compare",
}

__all__ = [
    "EMPTY_SCORE",
    "confusion_counts",
    "dice_from_counts",
    "iou_from_counts",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
