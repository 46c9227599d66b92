"""Brush strokes on a mask, and "snap to edges": a stroke that follows the photo's edges.

A stroke is a polyline in the photo's pixel coordinates with a radius; it covers every pixel
whose centre (x + 0.5, y + 0.5) lies within the radius of the polyline. The review page paints
exactly this set (``review.js`` uses the same rule), so a test can say which pixels a stroke may
have changed.

Snap to edges refines a stroke inside its own area and nowhere else: a geodesic segmentation
(Criminisi, Sharp and Blake, "GeoS: Geodesic Image Segmentation", ECCV 2008). The stroke's
centre line is a seed of what the tool paints (product for the brush, background for the
eraser); the ring of pixels just outside the stroke is seeded with what the mask says there.
Each pixel of the stroke takes the label of the nearest seed, where distance is measured along
paths that pay for every colour change they cross, so the label changes where the photo has an
edge between the centre line and the ring. A brush then only adds product and an eraser only
removes it, as without snap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from clearbg.errors import ReviewError

BRUSH, ERASER = "brush", "eraser"
RING_PX = 2
"""Width of the seed ring outside a stroke: wide enough to hold across a one-pixel gap."""
CORE_SHARE = 0.1
"""The centre line's seed is this share of the radius wide (at least one pixel): the part of a
stroke a person means for certain."""
LENGTH_COST = 0.01
"""Cost of one pixel of path length, against a full black-to-white jump costing 1: a path would
rather cross a 1 % colour step than go one pixel further, so flat regions split by proximity and
real edges decide where they exist. Chosen with CORE_SHARE on simulated strokes over the tiny
subset's true masks (``bench/snap_quality.py``)."""
MAX_STROKE_PIXELS = 4_000_000
"""A bound on one snapped stroke's area (a 1,000 px brush dragged across 2,000 px): the graph
costs about 100 bytes a pixel."""


@dataclass(frozen=True)
class Stroke:
    """One brush or eraser stroke.

    Attributes:
        points: the polyline, ``(x, y)`` in the photo's pixels (0..width, 0..height).
        radius: in the photo's pixels.
        tool: ``brush`` (paints product, 255) or ``eraser`` (paints background, 0).
    """

    points: tuple[tuple[float, float], ...]
    radius: float
    tool: str

    def __post_init__(self) -> None:
        if self.tool not in (BRUSH, ERASER):
            raise ReviewError(f"a stroke's tool is {BRUSH!r} or {ERASER!r}, got {self.tool!r}")
        if not self.points:
            raise ReviewError("a stroke needs at least one point")
        if not 0.5 <= self.radius <= 2000:
            raise ReviewError(f"a stroke's radius is 0.5 to 2000 px, got {self.radius}")
        if not np.isfinite(np.asarray(self.points, dtype=float)).all():
            raise ReviewError("a stroke's points must be finite numbers")

    @property
    def value(self) -> int:
        return 255 if self.tool == BRUSH else 0

    def box(self, width: int, height: int, margin: float = 0.0) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``: the pixels the stroke (grown by ``margin``) can touch, clipped to the photo."""
        xy = np.asarray(self.points, dtype=float)
        reach = self.radius + margin
        x0, y0 = np.floor(xy.min(axis=0) - reach).astype(int)
        x1, y1 = np.ceil(xy.max(axis=0) + reach).astype(int) + 1
        return max(int(x0), 0), max(int(y0), 0), min(int(x1), width), min(int(y1), height)


def stroke_area(stroke: Stroke, box: tuple[int, int, int, int], radius: float | None = None) -> np.ndarray:
    """The pixels of ``box`` whose centres lie within ``radius`` (default: the stroke's) of its polyline.

    Returns:
        A boolean array of the box's shape (``y1 - y0``, ``x1 - x0``).

    Example:
        >>> stroke_area(Stroke(((2.0, 2.0),), 1.0, "brush"), (0, 0, 4, 4)).astype(int)
        array([[0, 0, 0, 0],
               [0, 1, 1, 0],
               [0, 1, 1, 0],
               [0, 0, 0, 0]])
    """
    x0, y0, x1, y1 = box
    r2 = (stroke.radius if radius is None else radius) ** 2
    px = np.arange(x0, x1, dtype=float)[None, :] + 0.5
    py = np.arange(y0, y1, dtype=float)[:, None] + 0.5
    inside = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    points = stroke.points if len(stroke.points) > 1 else stroke.points * 2
    for (ax, ay), (bx, by) in zip(points[:-1], points[1:]):
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        if length2 > 0:
            t = np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0.0, 1.0)
        else:
            t = np.zeros_like(px * py)
        ex, ey = px - (ax + t * dx), py - (ay + t * dy)
        inside |= ex * ex + ey * ey <= r2
    return inside


def paint(mask: np.ndarray, stroke: Stroke) -> np.ndarray:
    """``mask`` (the whole photo's, uint8) with the stroke painted hard, as the page paints it."""
    box = stroke.box(mask.shape[1], mask.shape[0])
    x0, y0, x1, y1 = box
    out = mask.copy()
    out[y0:y1, x0:x1][stroke_area(stroke, box)] = stroke.value
    return out


def snap_stroke(photo: np.ndarray, mask: np.ndarray, stroke: Stroke,
                box: tuple[int, int, int, int]) -> np.ndarray:
    """Paint ``stroke`` so that it follows the photo's edges (see the module's docstring).

    Args:
        photo: the photo's pixels in ``box``, (h, w, 3) uint8.
        mask: the mask in ``box`` before the stroke, (h, w) uint8.
        stroke: in the photo's coordinates.
        box: ``(x0, y0, x1, y1)``, where ``photo`` and ``mask`` sit in the photo. It should
            hold the stroke and a ring of ``RING_PX`` around it (``stroke.box(w, h, RING_PX)``).

    Returns:
        The mask in ``box`` after the stroke: it differs from ``mask`` only inside the
        stroke's area, and only towards the tool's value.

    Raises:
        ReviewError: shapes that do not match the box, or a stroke too large to snap.
    """
    x0, y0, x1, y1 = box
    shape = (y1 - y0, x1 - x0)
    if mask.shape != shape or photo.shape[:2] != shape or photo.ndim != 3:
        raise ReviewError(f"snap: the photo {photo.shape} and mask {mask.shape} do not fit the box {box}")
    area = stroke_area(stroke, box)
    if area.sum() > MAX_STROKE_PIXELS:
        raise ReviewError(f"a stroke of {int(area.sum())} pixels is too large to snap "
                          f"(at most {MAX_STROKE_PIXELS}); paint it without snap, or in parts")
    paints_product = stroke.tool == BRUSH
    core = stroke_area(stroke, box, radius=max(stroke.radius * CORE_SHARE, 0.75))
    ring = ndimage.binary_dilation(area, iterations=RING_PX) & ~area
    product = mask >= 128
    label = _geodesic_labels(photo, area | ring, seeds_product=(core if paints_product else np.zeros_like(core)) | (ring & product),
                             seeds_background=(np.zeros_like(core) if paints_product else core) | (ring & ~product))
    out = mask.copy()
    if paints_product:
        out[area & label] = 255
    else:
        out[area & ~label] = 0
    return out


def _geodesic_labels(photo: np.ndarray, nodes: np.ndarray, seeds_product: np.ndarray,
                     seeds_background: np.ndarray) -> np.ndarray:
    """True where the nearest seed (geodesic distance over ``nodes``) is a product seed."""
    # A light blur: JPEG noise would otherwise make every path pay for texture.
    smooth = ndimage.gaussian_filter(photo.astype(np.float32) / 255.0, sigma=(1.0, 1.0, 0.0))
    index = -np.ones(nodes.shape, dtype=np.int64)
    index[nodes] = np.arange(int(nodes.sum()))
    rows, cols, costs = [], [], []
    h, w = nodes.shape
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):  # each undirected 8-neighbour pair once
        a = (slice(0, h - dy), slice(max(-dx, 0), w - max(dx, 0)))
        b = (slice(dy, h), slice(max(dx, 0), w - max(-dx, 0)))
        both = nodes[a] & nodes[b]
        step = float(np.hypot(dx, dy))
        jump = np.linalg.norm(smooth[a] - smooth[b], axis=-1)[both] / np.sqrt(3.0)
        rows.append(index[a][both])
        cols.append(index[b][both])
        costs.append(step * LENGTH_COST + jump + 1e-6)
    n = int(nodes.sum())
    graph = coo_matrix((np.concatenate(costs), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    to_product = _distance(graph, index[seeds_product & nodes], n)
    to_background = _distance(graph, index[seeds_background & nodes], n)
    label = np.zeros(nodes.shape, dtype=bool)
    label[nodes] = to_product < to_background
    return label


def _distance(graph, sources: np.ndarray, n: int) -> np.ndarray:
    if sources.size == 0:
        return np.full(n, np.inf)
    return dijkstra(graph, directed=False, indices=sources, min_only=True)
