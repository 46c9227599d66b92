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

Two scores of a finished cutout (alpha and colours, not a thresholded map), for edge work
(README "Edges"; they are not in :data:`METRIC_KEYS`, which scores a model's map):

* :func:`ghost`: the alpha mass outside the true mask, as a share of the product's area:
  semi-transparent remnants of the background (a passer-by's arm, the pavement at the feet)
  and the part of a soft edge that spills outside. 0 is none; 0.05 is 5 % of the product's
  area in faint background.
* :func:`halo`: how far the colours of the edge band, composited on a new background, are
  from what they would be if every edge pixel had the product's own colour (its nearest
  interior pixel) with the same alpha: the fringe of the old background a viewer sees, as a
  mean CIELAB Delta E 1976 (about 2.3 is just noticeable).

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

__all__ = ["METRIC_KEYS", "boundary", "ghost", "halo", "image_metrics", "min_region_area"]

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


def ghost(alpha: np.ndarray, truth: np.ndarray) -> float:
    """Alpha mass outside the true mask, as a share of the product's area.

    Args:
        alpha: (H, W) float alpha, 0..1 (or uint8 0..255, scaled).
        truth: (H, W) bool truth.

    Returns:
        sum(alpha outside truth) / truth area; with an empty truth, the alpha mass over the
        photo's area (0.0 when alpha is empty too: nothing to find, nothing shown).

    Example:
        >>> truth = np.zeros((4, 4), bool); truth[:2] = True   # 8 product pixels
        >>> alpha = truth.astype(float); alpha[3, :2] = 0.5    # 1 pixel's worth of haze
        >>> ghost(alpha, truth)
        0.125
    """
    alpha, truth = _alpha(alpha), np.asarray(truth).astype(bool, copy=False)
    if alpha.shape != truth.shape or alpha.ndim != 2:
        raise ValueError(f"alpha {alpha.shape} and truth {truth.shape} must be the same (H, W) shape")
    outside = float(alpha[~truth].sum())
    area = int(np.count_nonzero(truth))
    return outside / (area if area else truth.size)


def halo(photo: np.ndarray, colours: np.ndarray, alpha: np.ndarray, truth: np.ndarray,
         background: tuple[int, int, int] = (255, 255, 255), *, band: int = 3) -> float:
    """Colour error of the composited edge band against the product's own colour.

    Every pixel within ``band`` px of the true outline (either side) is composited on
    ``background`` twice with the output's alpha: once with the output's colours, once with
    the colour of the nearest product pixel at least ``band + 2`` px inside the truth (the
    product's interior colour there). The score is the mean CIELAB Delta E 1976 between the
    two. A cutout that keeps the old background's colour in its soft edge, or an opaque rim of
    background, scores high; alpha itself only weighs the difference.

    Args:
        photo: (H, W, 3) uint8 RGB photo (the interior colours come from it).
        colours: (H, W, 3) uint8 RGB colours of the output (the photo itself for a plain cutout).
        alpha: (H, W) alpha of the output, float 0..1 or uint8.
        truth: (H, W) bool truth.
        background: RGB the cutout is shown on.
        band: half-width of the edge band in pixels.

    Returns:
        Mean Delta E over the band; NaN when the truth has no interior (nothing to compare with).

    Example:
        >>> photo = np.zeros((9, 9, 3), np.uint8); photo[:, :5] = (200, 0, 0)  # red | black
        >>> truth = np.zeros((9, 9), bool); truth[:, :5] = True
        >>> alpha = truth.astype(float); alpha[:, 5] = 1.0      # one opaque column of background
        >>> halo(photo, photo, alpha, truth, band=1) > halo(photo, photo, truth.astype(float), truth, band=1)
        True
    """
    alpha, truth = _alpha(alpha), np.asarray(truth).astype(bool, copy=False)
    if photo.shape[:2] != truth.shape or colours.shape != photo.shape or alpha.shape != truth.shape:
        raise ValueError(f"photo {photo.shape}, colours {colours.shape}, alpha {alpha.shape} and truth "
                         f"{truth.shape} must share (H, W)")
    interior = ndimage.distance_transform_edt(truth) > band + 2
    if not interior.any():
        return float("nan")
    near = _near(boundary(truth), (slice(None), slice(None)), band)
    _, (rows, cols) = ndimage.distance_transform_edt(~interior, return_indices=True)
    a = alpha[near][:, None]
    bg = np.asarray(background, np.float64) / 255.0
    shown = a * colours[near] / 255.0 + (1.0 - a) * bg
    wanted = a * photo[rows[near], cols[near]] / 255.0 + (1.0 - a) * bg
    return float(np.linalg.norm(_lab(shown) - _lab(wanted), axis=-1).mean())


def _alpha(alpha: np.ndarray) -> np.ndarray:
    alpha = np.asarray(alpha)
    return alpha / 255.0 if alpha.dtype == np.uint8 else alpha.astype(np.float64, copy=False)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0..1, ... x 3) -> CIELAB (D65)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_D65 = np.array([0.95047, 1.0, 1.08883])
