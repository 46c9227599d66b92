"""Alpha matting and foreground colours with PyMatting, at full resolution, in tiles.

* ``trimap``: certain product, certain background and the unknown band between them, drawn
  from a mask exactly as rembg's ``--alpha-matting`` draws it (the same three parameters:
  foreground threshold, background threshold, erode size), so its users find them.
* ``matte``: closed-form matting (Levin, Lischinski and Weiss, "A Closed-Form Solution to
  Natural Image Matting", TPAMI 2008) of the unknown band. Learning-based matting (Zheng and
  Kambhamettu 2009, also in PyMatting) was measured too: 5-9x slower and no better on the
  val splits, so it is not offered.
* ``foreground``: the product's own colours in the soft band (Germer et al., "Fast
  Multi-Level Foreground Estimation", ICPR 2020): a pixel at alpha 0.5 is half the old
  background, and shown as it is on a white page it leaves a halo of that background.

Both solvers build matrices over every pixel they are given, so a large photo is cut into
``TILE`` px tiles, each solved with ``MARGIN`` px of context, and tiles with nothing to
solve are skipped: memory stays bounded and the cost follows the length of the edge.

PyMatting (and numba under it) is the ``matting`` extra: ``pip install 'clearbg[matting]'``.
"""

from __future__ import annotations

import importlib.util
from typing import Iterator

import numpy as np
from scipy import ndimage

__all__ = ["MARGIN", "TILE", "foreground", "matte", "require_pymatting", "trimap"]

TILE = 1024
"""Tile side in pixels: a 0.5 MP product photo is one tile."""

MARGIN = 32
"""Context around each tile, px: the solvers' windows reach a few pixels; the band's ends more."""


def require_pymatting(what: str) -> None:
    """Fail before any work when PyMatting is missing, naming the option and the fix.

    Raises:
        ImportError: (``name="pymatting"``, so the CLI names the extra too).
    """
    if importlib.util.find_spec("pymatting") is None:
        raise ImportError(f"{what} needs PyMatting, which the base install leaves out: "
                          "pip install 'clearbg[matting]'", name="pymatting")


def trimap(alpha: np.ndarray, foreground_threshold: int = 240, background_threshold: int = 10,
           erode_size: int = 10) -> np.ndarray:
    """Product (1), background (0) and unknown (0.5) from a mask.

    Args:
        alpha: (H, W) float mask, 0..1.
        foreground_threshold: 8-bit level above which a pixel is product (rembg's ``-af``).
            The definitions are rembg's, but for the photo's frame (see below).
        background_threshold: 8-bit level below which a pixel is background (``-ab``).
        erode_size: side in pixels of the square both regions are eroded by, widening the
            unknown band (``-ae``); 0 keeps them as thresholded.

    Returns:
        (H, W) float64 trimap.

    Example:
        >>> trimap(np.array([[0.0, 0.5, 1.0]]), erode_size=0).tolist()
        [[0.0, 0.5, 1.0]]
    """
    levels = np.round(np.asarray(alpha, np.float32) * 255)
    product, background = levels > foreground_threshold, levels < background_threshold
    if erode_size > 0:
        # Unlike rembg's, the photo's frame is not an edge (border_value=1 for both): a product
        # cut by the frame gets no unknown band along it, where there is no background to learn.
        square = np.ones((erode_size, erode_size), bool)
        product = ndimage.binary_erosion(product, square, border_value=1)
        background = ndimage.binary_erosion(background, square, border_value=1)
    out = np.full(levels.shape, 0.5)
    out[product], out[background] = 1.0, 0.0
    return out


def matte(photo: np.ndarray, tri: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Closed-form alpha of the unknown band of ``tri``.

    Args:
        photo: (H, W, 3) float RGB, 0..1.
        tri: (H, W) trimap from ``trimap``.
        fallback: (H, W) alpha kept where a tile lacks known product or known background to
            start from (an unknown band wider than the tile's margin).

    Returns:
        (H, W) float32 alpha, 0..1: ``tri`` where known, the matte where unknown.
    """
    from pymatting import estimate_alpha_cf

    out = tri.astype(np.float32)
    unknown = tri == 0.5
    for inner, outer in _tiles(unknown):
        crop = tri[outer]
        if not ((crop == 1.0).any() and (crop == 0.0).any()):  # nothing to propagate from
            out[inner] = np.where(unknown[inner], fallback[inner], out[inner])
            continue
        alpha = estimate_alpha_cf(np.asarray(photo[outer], np.float64), crop)
        out[inner] = np.clip(alpha[_within(inner, outer)], 0.0, 1.0)
    return out


def foreground(photo: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The product's colours where ``alpha`` is soft; the photo's own elsewhere.

    Args:
        photo: (H, W, 3) float RGB, 0..1.
        alpha: (H, W) float alpha, 0..1.

    Returns:
        (H, W, 3) float32 RGB, 0..1.
    """
    from pymatting import estimate_foreground_ml

    out = np.array(photo, np.float32)
    soft = (alpha > 0.0) & (alpha < 1.0)
    for inner, outer in _tiles(soft):
        colours = estimate_foreground_ml(np.asarray(photo[outer], np.float64), np.asarray(alpha[outer], np.float64))
        band = soft[inner]
        out[inner][band] = np.clip(colours[_within(inner, outer)][band], 0.0, 1.0)
    return out


Window = tuple[slice, slice]


def _tiles(todo: np.ndarray) -> Iterator[tuple[Window, Window]]:
    """(tile, tile with margin) for every ``TILE`` tile holding a True pixel of ``todo``."""
    height, width = todo.shape
    for top in range(0, height, TILE):
        for left in range(0, width, TILE):
            inner = (slice(top, min(top + TILE, height)), slice(left, min(left + TILE, width)))
            if not todo[inner].any():
                continue
            outer = (slice(max(0, top - MARGIN), min(top + TILE + MARGIN, height)),
                     slice(max(0, left - MARGIN), min(left + TILE + MARGIN, width)))
            yield inner, outer


def _within(inner: Window, outer: Window) -> Window:
    """``inner`` in the coordinates of the crop ``outer``."""
    return tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer))  # type: ignore[return-value]
