"""Every score of one prediction against its truth mask, at the photo's own resolution.

Counts first (``tp, fp, fn, tn``, kept in the result so any set of images can be pooled
exactly), then the ratios. The keys of :func:`image_metrics`:

* ``iou``, ``dice``: from the counts, through :mod:`clearbg.evaluate.metrics`.
* ``precision`` = tp / (tp + fp): how much of what was kept is product.
* ``recall`` = tp / (tp + fn): how much of the product was kept.
* ``mae``: mean |probability - truth| over all pixels, on the probability map itself (no
  threshold), so a hesitant 0.6 on a product pixel costs more than a confident 0.99.
* ``boundary_f``: F-measure of outlines. An outline pixel is a foreground pixel with a
  background 4-neighbour (the photo's frame is not an outline: a product cut by the frame has
  no edge there). A predicted outline pixel is right when a true outline pixel lies within
  ``boundary_tolerance`` px (Euclidean), and a true one is found when a predicted one does;
  F = 2PR / (P + R). It sees what IoU hides on large products: a ragged or shifted edge.
* ``error_regions``: the correction-effort estimate, the number of brush strokes a retoucher
  would need. Wrong pixels (prediction XOR truth) within ``boundary_tolerance`` px of the true
  outline are edge noise (``boundary_f`` measures them; an edge-refine tool fixes them);
  the rest fall into 8-connected regions, and a region counts when it is at least
  :func:`min_region_area` pixels (1 % of the photo's short side, squared: a blob visible at a
  glance, the same share of the photo at any resolution).
* ``fg_fraction``: the truth's foreground share.

The empty-mask rule (one for every ratio, consistent with ``metrics.EMPTY_SCORE``): a ratio
whose denominator is 0 scores ``EMPTY_SCORE`` (1.0) when truth and prediction are both empty
(nothing to find, nothing found: a perfect answer) and 0.0 otherwise (e.g. the precision of an
empty prediction on a real product: it found none of it). The same holds for ``boundary_f``
with the outlines in place of the masks.

Example:
    >>> prob = np.array([[0.9, 0.8, 0.1, 0.0]]); truth = np.array([[True, False, True, False]])
    >>> m = image_metrics(prob, truth, boundary_tolerance=0)
    >>> m["tp"], m["fp"], m["fn"], m["iou"], round(m["mae"], 3)
    (1.0, 1.0, 1.0, 0.3333333333333333, 0.45)
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from clearbg.evaluate.metrics import EMPTY_SCORE, dice_from_counts, iou_from_counts

__all__ = ["METRIC_KEYS", "boundary", "image_metrics", "min_region_area"]

# Every key image_metrics returns, in the order tables show them.
METRIC_KEYS = (
    "iou",
    "dice",
    "precision",
    "recall",
    "mae",
    "boundary_f",
    "error_regions",
    "fg_fraction",
    "tp",
    "fp",
    "fn",
    "tn",
)

_FOUR_NEIGHBOURS = ndimage.generate_binary_structure(2, 1)
_EIGHT_NEIGHBOURS = ndimage.generate_binary_structure(2, 2)


def _ratio(num: float, den: float, both_empty: bool) -> float:
    """num / den, with the empty rule for den == 0 (see the module docstring)."""
    if den == 0:
        return EMPTY_SCORE if both_empty else 0.0
    return num / den


def boundary(mask: np.ndarray) -> np.ndarray:
    """Outline pixels of a bool mask: foreground with a background 4-neighbour.

    The frame of the image counts as foreground (``border_value=1``), so a product cut by the
    photo's edge has no outline there.

    Example:
        >>> int(boundary(np.ones((3, 3), bool)).sum())  # a mask filling the frame has no outline
        0
        >>> int(boundary(np.pad(np.ones((3, 3), bool), 1)).sum())  # a 3x3 square: 8 outline pixels
        8
    """
    return mask & ~ndimage.binary_erosion(mask, _FOUR_NEIGHBOURS, border_value=1)


def _near(pixels: np.ndarray, window: tuple[slice, slice], tolerance: int) -> np.ndarray:
    """Pixels within ``tolerance`` (Euclidean) of a True pixel of ``pixels``.

    Distances are computed inside ``window`` only: it holds every True pixel plus a margin
    wider than the tolerance, so nothing outside it can be near (about twice as fast on a
    product that fills half the photo).
    """
    near = np.zeros(pixels.shape, bool)
    if pixels[window].any():
        near[window] = ndimage.distance_transform_edt(~pixels[window]) <= tolerance
    return near


def _window(edges: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The bounding box of the True pixels of ``edges``, grown by ``margin`` (clipped)."""
    rows, cols = np.flatnonzero(edges.any(axis=1)), np.flatnonzero(edges.any(axis=0))
    if not len(rows):
        return slice(0, 0), slice(0, 0)
    height, width = edges.shape
    return (
        slice(max(0, rows[0] - margin), min(height, rows[-1] + margin + 1)),
        slice(max(0, cols[0] - margin), min(width, cols[-1] + margin + 1)),
    )


def min_region_area(height: int, width: int) -> int:
    """Smallest wrong region (pixels) that counts as one brush stroke in ``error_regions``.

    ``ceil((short side / 100) ** 2)``, at least 1: 31 px on a 550 px wide photo, 1600 px on a
    4000 px one.

    Example:
        >>> min_region_area(832, 550)
        31
    """
    return max(1, math.ceil((min(height, width) / 100) ** 2))


def image_metrics(
    prob: np.ndarray,
    truth: np.ndarray,
    *,
    threshold: float = 0.5,
    boundary_tolerance: int = 3,
) -> dict[str, float]:
    """Score one foreground probability map against its truth mask.

    Args:
        prob: (H, W) float prediction, 0..1 (or a bool mask).
        truth: (H, W) bool truth (any array; non-zero is foreground).
        threshold: the prediction is foreground where ``prob > threshold`` (as in
            ``metrics.confusion_counts``).
        boundary_tolerance: pixels an outline may be off and still count as right (for
            ``boundary_f``; also the edge band ``error_regions`` leaves out).

    Returns:
        A dict of floats with the keys of :data:`METRIC_KEYS` (see the module docstring).

    Raises:
        ValueError: shapes differ or are not 2-D, or the tolerance is negative.

    Example:
        >>> truth = np.zeros((8, 8), bool); truth[2:6, 2:6] = True
        >>> image_metrics(truth.astype(float), truth)["boundary_f"]
        1.0
    """
    prob = np.asarray(prob)
    truth = np.asarray(truth).astype(bool, copy=False)
    if prob.shape != truth.shape or prob.ndim != 2:
        raise ValueError(f"prediction {prob.shape} and truth {truth.shape} must be the same (H, W) shape")
    if boundary_tolerance < 0:
        raise ValueError(f"boundary_tolerance must be >= 0 pixels, got {boundary_tolerance}")
    pred = prob if prob.dtype == bool else prob > threshold

    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(truth)) - tp
    tn = truth.size - tp - fp - fn
    counts = np.array([tp, fp, fn, tn], dtype=np.int64)
    both_empty = tp + fp + fn == 0

    truth_edge, pred_edge = boundary(truth), boundary(pred)
    window = _window(truth_edge | pred_edge, boundary_tolerance + 1)
    near_truth_edge = _near(truth_edge, window, boundary_tolerance)
    pred_hits = int(np.count_nonzero(pred_edge & near_truth_edge))
    truth_hits = int(np.count_nonzero(truth_edge & _near(pred_edge, window, boundary_tolerance)))
    edges_empty = not truth_edge.any() and not pred_edge.any()
    b_precision = _ratio(pred_hits, np.count_nonzero(pred_edge), edges_empty)
    b_recall = _ratio(truth_hits, np.count_nonzero(truth_edge), edges_empty)
    if edges_empty:
        boundary_f = EMPTY_SCORE
    else:
        boundary_f = _ratio(2 * b_precision * b_recall, b_precision + b_recall, False)

    # Wrong pixels beyond the edge band, in regions big enough to need a brush stroke.
    wrong = (pred != truth) & ~near_truth_edge
    labels, n_regions = ndimage.label(wrong, _EIGHT_NEIGHBOURS)
    if n_regions:
        areas = np.bincount(labels.ravel(), minlength=n_regions + 1)[1:]
        regions = int(np.count_nonzero(areas >= min_region_area(*truth.shape)))
    else:
        regions = 0

    truth_f = truth.astype(np.float32)
    return {
        "iou": float(iou_from_counts(counts)),
        "dice": float(dice_from_counts(counts)),
        "precision": _ratio(tp, tp + fp, both_empty),
        "recall": _ratio(tp, tp + fn, both_empty),
        "mae": float(np.abs(prob.astype(np.float32) - truth_f).mean()) if truth.size else 0.0,
        "boundary_f": float(boundary_f),
        "error_regions": float(regions),
        "fg_fraction": float(tp + fn) / truth.size if truth.size else 0.0,
        "tp": float(tp),
        "fp": float(fp),
        "fn": float(fn),
        "tn": float(tn),
    }
