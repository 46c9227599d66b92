"""Strokes and snap to edges, on hand-made photos where the right answer is known to the pixel."""

from __future__ import annotations

import numpy as np
import pytest

from clearbg.errors import ReviewError
from clearbg.review.snap import RING_PX, Stroke, paint, snap_stroke, stroke_area


def _edge_photo(h: int = 80, w: int = 100, edge: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """A dark product left of column ``edge`` on a light, noisy background, and its true mask."""
    rng = np.random.default_rng(0)
    photo = np.full((h, w, 3), 200, np.uint8)
    photo[:, :edge] = (60, 40, 90)
    photo = np.clip(photo.astype(int) + rng.integers(-12, 13, photo.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((h, w), np.uint8)
    truth[:, :edge] = 255
    return photo, truth


def test_a_stroke_covers_the_pixels_whose_centres_lie_within_its_radius():
    stroke = Stroke(((10.0, 10.0), (30.0, 10.0)), 3.0, "brush")
    area = stroke_area(stroke, (0, 0, 40, 20))
    ys, xs = np.nonzero(area)
    assert xs.min() == 7 and xs.max() == 32 and ys.min() == 7 and ys.max() == 12  # centres 7.5 .. 32.5
    assert area[10, 20] and not area[6, 20] and not area[13, 20]
    mask = np.full((20, 40), 77, np.uint8)
    painted = paint(mask, stroke)
    assert (painted[area] == 255).all() and (painted[~area] == 77).all()
    assert (paint(mask, Stroke(stroke.points, 3.0, "eraser"))[area] == 0).all()


def test_snapped_brush_fills_up_to_the_edge_and_not_beyond():
    photo, truth = _edge_photo()
    predicted = truth.copy()
    predicted[:, 38:50] = 0                      # the model missed a band of product
    # The reviewer paints down the missed band; the 14 px brush overshoots the edge by 9 px.
    stroke = Stroke(((45.0, 10.0), (45.0, 70.0)), 14.0, "brush")
    box = stroke.box(100, 80, RING_PX)
    x0, y0, x1, y1 = box
    after = snap_stroke(photo[y0:y1, x0:x1], predicted[y0:y1, x0:x1], stroke, box)
    area = stroke_area(stroke, box)
    plain_wrong = (area & (truth[y0:y1, x0:x1] == 0)).sum()
    assert plain_wrong > 400                     # what the plain brush would paint over the background
    assert np.array_equal(after[area], truth[y0:y1, x0:x1][area])
    assert np.array_equal(after[~area], predicted[y0:y1, x0:x1][~area])


def test_snapped_eraser_removes_only_the_background_side():
    photo, truth = _edge_photo()
    predicted = truth.copy()
    predicted[:, 50:62] = 255                    # the model took a band of background
    stroke = Stroke(((56.0, 5.0), (56.0, 75.0)), 12.0, "eraser")
    box = stroke.box(100, 80, RING_PX)
    x0, y0, x1, y1 = box
    after = snap_stroke(photo[y0:y1, x0:x1], predicted[y0:y1, x0:x1], stroke, box)
    assert np.array_equal(after, truth[y0:y1, x0:x1])


def test_a_brush_never_removes_and_an_eraser_never_adds():
    photo, truth = _edge_photo()
    soft = np.full_like(truth, 130)
    for tool in ("brush", "eraser"):
        stroke = Stroke(((50.0, 40.0),), 20.0, tool)
        box = stroke.box(100, 80, RING_PX)
        x0, y0, x1, y1 = box
        after = snap_stroke(photo[y0:y1, x0:x1], soft[y0:y1, x0:x1], stroke, box)
        assert ((after >= 130) if tool == "brush" else (after <= 130)).all()
        assert set(np.unique(after)) <= {0, 130, 255}


def test_bad_strokes_are_refused_with_the_reason():
    with pytest.raises(ReviewError, match="tool"):
        Stroke(((1.0, 1.0),), 5.0, "lasso")
    with pytest.raises(ReviewError, match="radius"):
        Stroke(((1.0, 1.0),), 0.0, "brush")
    with pytest.raises(ReviewError, match="finite"):
        Stroke(((float("nan"), 1.0),), 5.0, "brush")
    with pytest.raises(ReviewError, match="do not fit"):
        snap_stroke(np.zeros((5, 5, 3), np.uint8), np.zeros((4, 4), np.uint8), Stroke(((2.0, 2.0),), 1.0, "brush"),
                    (0, 0, 5, 5))
