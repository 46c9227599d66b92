"""Binary mask metrics that count first and reduce second.

Every score here is computed from four pixel counts per image (true/false positives and
negatives, the ``get_stats`` idea of segmentation_models.pytorch), never from per-batch or
per-process averages. Counts add up exactly across batches, processes (``all_reduce_sum``) and
clusters, so the IoU of a split is the same whether it was computed on one CPU or 64 GPUs.

Two reductions:

* pooled ("micro"): add the counts of all images, then take IoU/Dice once. Large objects
  weigh more.
* per image: IoU/Dice of each image, then their mean (or the share above a bar). This is what
  ``clearbg evaluate`` and training validation report.

The empty-mask rule, written down: when an image's truth AND prediction are both empty
(tp + fp + fn == 0), IoU and Dice are undefined (0/0). We score them ``EMPTY_SCORE = 1.0``:
predicting no product where there is none is a perfect answer. An empty truth with a
non-empty prediction scores 0 (tp = 0, fp > 0), and so does the reverse. Every function takes
``empty=`` to choose another value (e.g. ``float("nan")`` to drop such images from a mean).

Example:
    >>> pred = torch.tensor([[[1, 1, 0, 0]]]); truth = torch.tensor([[[1, 0, 1, 0]]])
    >>> counts = confusion_counts(pred, truth)        # (1, 4): tp, fp, fn, tn
    >>> counts.tolist()
    [[1, 1, 1, 1]]
    >>> iou_from_counts(counts).item()                # 1 / (1 + 1 + 1)
    0.3333333333333333
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "COUNT_NAMES",
    "EMPTY_SCORE",
    "FN",
    "FP",
    "TN",
    "TP",
    "confusion_counts",
    "dice_from_counts",
    "iou_from_counts",
]

TP, FP, FN, TN = 0, 1, 2, 3  # column of each count in a (..., 4) counts tensor
COUNT_NAMES = ("tp", "fp", "fn", "tn")
EMPTY_SCORE = 1.0  # IoU/Dice when truth and prediction are both empty (see module docstring)


def _as_bool(x: torch.Tensor | np.ndarray, threshold: float) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dtype == torch.bool:
        return t
    return t > threshold


def confusion_counts(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    threshold: float = 0.5,
    target_threshold: float = 0.5,
) -> torch.Tensor:
    """Per-image pixel counts ``[tp, fp, fn, tn]``.

    Args:
        pred: (B, ...) predictions: bool, or probabilities binarised as ``pred > threshold``
            (pass ``threshold=0`` for logits). A single image without batch axis: pass
            ``pred[None]``.
        target: (B, ...) truth of the same shape: bool, 0/1, or 0..1 (soft masks are
            binarised at ``target_threshold``; 0/255 masks need ``target_threshold=127``).
        threshold: cut for ``pred``.
        target_threshold: cut for ``target``.

    Returns:
        int64 tensor (B, 4) on ``pred``'s device; columns ``TP, FP, FN, TN``.

    Raises:
        ValueError: shapes differ, or no batch axis.

    Example:
        >>> confusion_counts(torch.tensor([[0.9, 0.2]]), torch.tensor([[1.0, 1.0]])).tolist()
        [[1, 0, 1, 0]]
    """
    p = _as_bool(pred, threshold)
    t = _as_bool(target, target_threshold).to(p.device)
    if p.shape != t.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and truth {tuple(t.shape)} must have the same shape")
    if p.ndim < 2:
        raise ValueError(f"expected (batch, ...) masks, got shape {tuple(p.shape)}; add a batch axis with x[None]")
    p, t = p.flatten(1), t.flatten(1)
    tp = (p & t).sum(1)
    fp = (p & ~t).sum(1)
    fn = (~p & t).sum(1)
    tn = p.shape[1] - tp - fp - fn
    return torch.stack([tp, fp, fn, tn], 1).to(torch.int64)


def _ratio(num: torch.Tensor, den: torch.Tensor, empty: float) -> torch.Tensor:
    num, den = num.double(), den.double()
    out = num / den.clamp_min(1)
    return torch.where(den == 0, torch.full_like(out, float(empty)), out)


def iou_from_counts(counts: torch.Tensor | np.ndarray, empty: float = EMPTY_SCORE) -> torch.Tensor:
    """Intersection over union ``tp / (tp + fp + fn)`` of each row of ``(..., 4)`` counts.

    Args:
        counts: from ``confusion_counts`` (per image), or summed (pooled).
        empty: the score when ``tp + fp + fn == 0`` (empty truth and empty prediction).

    Returns:
        float64 tensor of shape ``counts.shape[:-1]``.

    Example:
        >>> iou_from_counts(torch.tensor([[2, 1, 1, 0], [0, 0, 0, 9]])).tolist()
        [0.5, 1.0]
    """
    c = torch.as_tensor(counts)
    return _ratio(c[..., TP], c[..., TP] + c[..., FP] + c[..., FN], empty)


def dice_from_counts(counts: torch.Tensor | np.ndarray, empty: float = EMPTY_SCORE) -> torch.Tensor:
    """Dice (F1) ``2 tp / (2 tp + fp + fn)`` of each row of ``(..., 4)`` counts.

    Args:
        counts: from ``confusion_counts`` (per image), or summed (pooled).
        empty: the score when ``tp + fp + fn == 0``.

    Returns:
        float64 tensor of shape ``counts.shape[:-1]``.

    Example:
        >>> dice_from_counts(torch.tensor([[2, 1, 1, 0]])).tolist()
        [0.6666666666666666]
    """
    c = torch.as_tensor(counts)
    return _ratio(2 * c[..., TP], 2 * c[..., TP] + c[..., FP] + c[..., FN], empty)
