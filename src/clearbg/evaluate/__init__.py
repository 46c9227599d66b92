"""Evaluation: count-first binary mask metrics (``clearbg.evaluate.metrics``).

Issue 6 adds the evaluation report over a held-out set on top of these counts.
"""

from clearbg.evaluate.metrics import (
    EMPTY_SCORE,
    confusion_counts,
    counts_by_group,
    dice_from_counts,
    iou_from_counts,
    summarize_counts,
)

__all__ = [
    "EMPTY_SCORE",
    "confusion_counts",
    "counts_by_group",
    "dice_from_counts",
    "iou_from_counts",
    "summarize_counts",
]
