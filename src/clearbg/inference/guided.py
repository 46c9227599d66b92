"""Guided filter: redraw the upsampled probability map's edge along the photo's own edges.

He, Sun and Tang, "Guided Image Filtering" (ECCV 2010 / TPAMI 2013), colour-guide version:
in every window the output is a linear function of the photo's RGB, ``q = a . I + b``, fitted
to the map by least squares with ridge ``eps``. Where the photo has an edge the output
follows it; where it is flat the map is only smoothed. For photos longer than
``WORK_SIDE`` the coefficients are fitted on a smaller copy and upsampled (He and Sun, "Fast
Guided Filter", 2015), then applied to the full-resolution photo, so the edge is still
drawn at full resolution.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["EPS", "WORK_SIDE", "guided_filter", "guided_radius"]

EPS = 1e-3
"""Ridge of the per-window fit (photo in 0..1): smaller follows weaker photo edges (val: 1e-4..1e-2 alike)."""

WORK_SIDE = 1280
"""Coefficients are fitted on a copy at most this long."""


def guided_radius(height: int, width: int) -> int:
    """Window radius for a map upsampled from the model: about 1.5 model pixels at 320 px
    (4 px on an 830 px photo, 2 px on a 480 px one: the best on the val splits)."""
    return max(1, round(min(max(height, width), WORK_SIDE) / 200))


def guided_filter(photo: np.ndarray, src: np.ndarray, radius: int | None = None, eps: float = EPS) -> np.ndarray:
    """Filter ``src`` guided by ``photo``.

    Args:
        photo: (H, W, 3) float RGB, 0..1.
        src: (H, W) float map to filter (a probability or alpha map).
        radius: window radius in pixels of the fitting copy (default ``guided_radius``).
        eps: ridge of the per-window least-squares fit.

    Returns:
        (H, W) float32, clipped to 0..1.

    Example:
        >>> photo = np.zeros((20, 20, 3), np.float32); photo[:, 10:] = 1.0   # a sharp edge
        >>> blurry = np.tile(np.linspace(0, 1, 20, dtype=np.float32), (20, 1))
        >>> out = guided_filter(photo, blurry, radius=3)
        >>> bool(out[10, 7] < blurry[10, 7] and out[10, 12] > blurry[10, 12])  # sharper
        True
    """
    height, width = src.shape
    if photo.shape != (height, width, 3):
        raise ValueError(f"photo {photo.shape} must be (H, W, 3) for a map of {src.shape}")
    photo = np.asarray(photo, np.float32)
    scale = min(1.0, WORK_SIDE / max(height, width))
    small_photo, small_src = photo, np.asarray(src, np.float32)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small_photo = np.stack([_resize(photo[..., c], size) for c in range(3)], axis=-1)
        small_src = _resize(small_src, size)
    r = radius or guided_radius(height, width)
    a, b = _coefficients(small_photo, small_src, r, eps)
    if scale < 1.0:
        a = np.stack([_resize(a[..., c], (width, height)) for c in range(3)], axis=-1)
        b = _resize(b, (width, height))
    return np.clip(np.einsum("hwc,hwc->hw", a, photo) + b, 0.0, 1.0)


def _coefficients(photo: np.ndarray, src: np.ndarray, r: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Window means of the fitted (a, b): (H, W, 3) and (H, W)."""

    def mean(x: np.ndarray) -> np.ndarray:
        size = (2 * r + 1, 2 * r + 1) + (1,) * (x.ndim - 2)  # over rows and columns only
        return ndimage.uniform_filter(x, size=size, mode="reflect")

    mean_i, mean_p = mean(photo), mean(src)
    cov = mean(photo * src[..., None]) - mean_i * mean_p[..., None]  # (H, W, 3)
    # The symmetric 3x3 covariance of the guide per pixel (plus the ridge), inverted in
    # closed form by cofactors: np.linalg.solve on millions of 3x3 systems is ~10x slower.
    s = {}
    for i in range(3):
        for j in range(i, 3):
            s[i, j] = mean(photo[..., i] * photo[..., j]) - mean_i[..., i] * mean_i[..., j] + (eps if i == j else 0.0)
    c00 = s[1, 1] * s[2, 2] - s[1, 2] ** 2
    c01 = s[0, 2] * s[1, 2] - s[0, 1] * s[2, 2]
    c02 = s[0, 1] * s[1, 2] - s[0, 2] * s[1, 1]
    c11 = s[0, 0] * s[2, 2] - s[0, 2] ** 2
    c12 = s[0, 1] * s[0, 2] - s[0, 0] * s[1, 2]
    c22 = s[0, 0] * s[1, 1] - s[0, 1] ** 2
    det = s[0, 0] * c00 + s[0, 1] * c01 + s[0, 2] * c02
    x, y, z = cov[..., 0], cov[..., 1], cov[..., 2]
    a = np.stack([c00 * x + c01 * y + c02 * z, c01 * x + c11 * y + c12 * z, c02 * x + c12 * y + c22 * z], axis=-1)
    a /= det[..., None]
    b = mean_p - np.einsum("hwc,hwc->hw", a, mean_i)
    return mean(a), mean(b)


def _resize(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(plane, np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))
