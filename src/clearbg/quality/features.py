"""Cheap signals of how good a mask is, read from maps the predictor computes anyway.

Each signal is a number per photo, computed on the model-resolution maps of a
:class:`~clearbg.inference.predictor.Prediction` (at most 320 x 320, so about a millisecond
whatever the photo's size). None of them needs the true mask; the calibration
(:mod:`clearbg.quality.calibration`) learns how they predict IoU.

* uncertainty: how much of the product region is neither clearly product nor background;
* boundary: how wide the transition from product to background is, in pixels;
* self-IoU: the IoU the map expects of itself if its probabilities were honest;
* side agreement: IoU of U2-Net's side outputs with the fused mask (coarse sides that disagree
  mean the decoder could not settle the shape);
* flip agreement: IoU of the mask with the mask of the mirrored photo, mirrored back;
* shape: fragments, holes, contact with the frame, the product's share of the photo;
* ``standin``: the share of the possible-product region above 0.9, the score clearbg reported
  before the calibration (kept so ``bench/confidence.py`` compares against it).

Not every signal feeds the calibration (see ``calibration.VARIANTS``); the bench reports how
each one alone ranks photos, which is how the combined sets were chosen.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from clearbg.inference.predictor import Prediction

LOW, HIGH = 0.1, 0.9
"""Below LOW a pixel is decisively background, above HIGH decisively product."""

BASE = ("uncertain", "standin", "band_width", "self_iou", "fragments", "stray_share", "holes",
        "hole_share", "border", "product_share")
SIDES = ("side_iou_mean", "side_iou_min", "side_iou_fine")
FLIP = ("flip_iou",)
ALL = BASE + SIDES + FLIP


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum()) / float(union)


def signals(prediction: Prediction) -> dict[str, float]:
    """Every signal available for one prediction (those of ``SIDES``/``FLIP`` only when the
    prediction carries side outputs / a flipped map).

    Example:
        >>> p = np.zeros((8, 8), np.float32); p[2:6, 2:6] = 1.0
        >>> round(signals(Prediction(prob=p, small=p))["self_iou"], 3)
        1.0
    """
    p = prediction.small.astype(np.float32, copy=False)
    mask = p > 0.5
    area = int(mask.sum())
    out: dict[str, float] = {}
    possible = p > LOW
    sure = p > HIGH
    soft = possible & ~sure
    out["uncertain"] = float(soft.sum()) / max(area, 1)
    out["standin"] = 1.0 if not possible.any() else float(sure.sum()) / float(possible.sum())
    edge = mask ^ ndimage.binary_erosion(mask)
    out["band_width"] = float(soft.sum()) / max(int(edge.sum()), 1)
    # If p were the true probability of product, expected intersection and union of the mask.
    inter = float(p[mask].sum())
    union = float(area) + float(p[~mask].sum())
    out["self_iou"] = 1.0 if union == 0 else inter / union
    labels, count = ndimage.label(mask)
    if count:
        sizes = np.bincount(labels.ravel())[1:]
        out["fragments"] = math.log1p(count - 1)
        out["stray_share"] = 1.0 - float(sizes.max()) / area
    else:
        out["fragments"], out["stray_share"] = 0.0, 0.0
    filled = ndimage.binary_fill_holes(mask)
    holes = filled & ~mask
    _, hole_count = ndimage.label(holes)
    out["holes"] = math.log1p(hole_count)
    out["hole_share"] = float(holes.sum()) / max(area, 1)
    frame = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    out["border"] = float(frame.mean())
    out["product_share"] = float(area) / mask.size
    if prediction.sides is not None:
        ious = [_iou(mask, side > 0.5) for side in prediction.sides]
        out["side_iou_mean"] = float(np.mean(ious))
        out["side_iou_min"] = float(np.min(ious))
        out["side_iou_fine"] = ious[0]
    if prediction.flipped is not None:
        out["flip_iou"] = _iou(mask, prediction.flipped > 0.5)
    return out
