"""One number saying how sure the model is about a photo's mask: the server's ``X-Confidence``
header and the ``confidence`` column of ``clearbg batch``'s results.

This is a stand-in until the quality gate (the review stage in ../shared/DESIGN.md) brings a
calibrated score: it is the only function the server and the batch call, so the gate can replace
it without touching anything else.
"""

from __future__ import annotations

import numpy as np

LOW = 0.1
"""Below this probability a pixel is decisively background."""

HIGH = 0.9
"""Above this probability a pixel is decisively product."""


def confidence(prob: np.ndarray, low: float = LOW, high: float = HIGH) -> float:
    """Share of the possible-product region that the model is decisive about.

    The region is every pixel the model does not rule out as background (``p > low``); a pixel
    in it counts as decisive when ``p > high``. Background is left out on purpose: it is most of
    a product photo and easy, so counting it would put every photo near 1.0. A crisp mask
    scores near 1, a mask with a wide soft band or blotchy half-sure areas scores low. A map
    with no possible product at all scores 1.0 (the model is sure there is nothing).

    Args:
        prob: foreground probabilities (0..1 float, any shape) from ``Predictor``.
        low, high: the decisive thresholds.

    Returns:
        A score in 0..1, rounded to 4 decimals.

    Example:
        >>> confidence(np.array([[0.0, 1.0], [0.95, 0.5]]))
        0.6667
    """
    region = prob > low
    count = int(region.sum())
    if count == 0:
        return 1.0
    return round(float((prob[region] > high).sum()) / count, 4)
