"""The published edge: clean-up, guided filter, closed-form matting, decontamination.

Synthetic scenes with a known answer for each step, then the default clean-up on real photos
of the tiny subset against their human masks (README "Edges" has the full-split figures).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from clearbg.evaluate.image_metrics import ghost, halo, image_metrics
from clearbg.inference import cleanup, guided, matting
from clearbg.inference.cleanup import MAX_HOLE, MIN_PART, clean_alpha
from clearbg.inference.edges import EdgeOptions, finish_edges
from clearbg.inference.guided import guided_filter
from clearbg.inference.matting import foreground, matte, trimap
from clearbg.inference.predictor import Predictor

RED, BLUE = np.array([0.9, 0.1, 0.1]), np.array([0.1, 0.2, 0.9])


def blurred_disc(size: int = 120, radius: int = 35, sigma: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """A soft probability map of a disc (like an upsampled model output) and its true mask."""
    yy, xx = np.mgrid[:size, :size]
    truth = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < radius**2
    return ndimage.gaussian_filter(truth.astype(np.float32), sigma), truth


def blended_scene(size: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """A red product on blue whose edge is a 10 px linear blend: (photo, true alpha)."""
    alpha = np.clip((np.arange(size, dtype=np.float32) - 35) / 10, 0, 1)[None, :].repeat(size, 0)
    photo = alpha[..., None] * RED + (1 - alpha[..., None]) * BLUE
    return photo.astype(np.float32), alpha


# --------------------------------------------------------------------------- clean-up


def test_clean_hardens_the_map_without_moving_the_outline():
    prob, truth = blurred_disc()
    alpha = clean_alpha(prob)
    assert np.array_equal(alpha > 0.5, prob > 0.5)  # IoU and boundary F cannot change
    soft = (alpha > 0) & (alpha < 1)
    assert 0 < soft.sum() < ((prob > 0.01) & (prob < 0.99)).sum() / 2  # a narrower soft band
    assert ghost(alpha, truth) < ghost(prob, truth)


def test_clean_removes_haze_far_from_the_product_but_keeps_a_confident_fragment():
    prob, _ = blurred_disc()
    prob[5:15, 5:15] = 0.45  # a faint remnant of the background: nothing in it is product
    prob[100:104, 5:9] = 0.8  # a small confident part
    alpha = clean_alpha(prob)
    assert alpha[5:15, 5:15].max() == 0.0
    assert alpha[101, 6] == 1.0 or alpha[101, 6] > 0.9


def test_drop_fragments_keeps_parts_as_large_as_the_product_and_drops_small_ones():
    prob = np.zeros((100, 200), np.float32)
    prob[30:70, 20:60] = 0.95   # left shoe
    prob[32:70, 120:158] = 0.95  # right shoe, a little smaller: a second product, kept
    prob[5:9, 180:184] = 0.95    # a smudge: a fragment
    alpha = clean_alpha(prob, min_part=MIN_PART)
    assert alpha[50, 40] == 1.0 and alpha[50, 140] == 1.0
    assert alpha[5:9, 180:184].max() == 0.0
    assert clean_alpha(prob)[6, 181] == 1.0  # without the option every part stays


def test_fill_holes_fills_pin_holes_but_not_a_gap_open_to_the_background():
    prob = np.zeros((200, 200), np.float32)
    prob[20:180, 20:180] = 0.95
    prob[60:62, 60:62] = 0.1      # a pin hole: 4 px of 25600
    prob[100:180, 90:110] = 0.0   # the gap between the legs, open at the bottom
    prob[130:150, 40:60] = 0.0    # an enclosed hole too large to be a pin hole (1.5 % of the product)
    alpha = clean_alpha(prob, max_hole=MAX_HOLE)
    assert alpha[60, 60] == 1.0
    assert alpha[170, 100] == 0.0 and alpha[140, 50] == 0.0
    assert clean_alpha(prob)[60, 60] == 0.0  # without the option the hole stays


def test_large_maps_are_decided_on_a_smaller_copy_with_the_same_result(monkeypatch):
    prob, _ = blurred_disc(size=240, radius=70, sigma=4.0)
    prob[10:20, 10:20] = 0.3
    full = clean_alpha(prob)
    monkeypatch.setattr(cleanup, "WORK_SIDE", 120)  # the 240 px map is decided at 120 px
    half = clean_alpha(prob)
    assert half[10:20, 10:20].max() == 0.0 and half[120, 120] == 1.0
    assert np.array_equal(half > 0.5, full > 0.5)
    assert np.abs(half - full).mean() < 0.01


def test_clean_refuses_a_ramp_that_would_move_the_outline():
    with pytest.raises(ValueError, match="ramp"):
        clean_alpha(np.zeros((4, 4)), ramp=(0.6, 0.9))
    with pytest.raises(ValueError, match="2-D"):
        clean_alpha(np.zeros((4, 4, 3)))


# --------------------------------------------------------------------------- guided filter


def test_guided_filter_moves_a_blurry_offset_edge_onto_the_photos_edge():
    truth = np.zeros((60, 60), bool)
    truth[:, 30:] = True  # the photo's edge is between columns 29 and 30
    photo = np.where(truth[..., None], RED, BLUE).astype(np.float32)
    shifted = np.zeros((60, 60), np.float32)
    shifted[:, 32:] = 1.0
    blurry = ndimage.gaussian_filter(shifted, 2)  # the model's edge: 2 px off and soft
    assert blurry[30, 31] < 0.5
    out = guided_filter(photo, blurry, radius=4)
    assert (out[:, 29] < 0.5).all() and (out[:, 30] >= 0.5).all()
    steps = np.diff(out, axis=1)
    assert (steps.argmax(axis=1) == 29).all() and steps.max() > 2 * np.diff(blurry, axis=1).max()


def test_guided_filter_of_a_large_photo_fits_on_a_copy_and_stays_close(monkeypatch):
    photo, alpha = blended_scene(160)
    prob = ndimage.gaussian_filter(alpha, 3)
    exact = guided_filter(photo, prob, radius=4)
    monkeypatch.setattr(guided, "WORK_SIDE", 80)
    fast = guided_filter(photo, prob, radius=2)
    assert fast.shape == exact.shape
    assert np.abs(fast - exact).mean() < 0.02


# --------------------------------------------------------------------------- matting


def test_trimap_follows_rembgs_thresholds_and_erosion():
    alpha = np.zeros((20, 20), np.float32)
    alpha[5:15, 5:15] = 1.0
    alpha[5:15, 4] = 0.5
    tri = trimap(alpha, 240, 10, erode_size=0)
    assert set(np.unique(tri)) == {0.0, 0.5, 1.0} and tri[10, 4] == 0.5
    eroded = trimap(alpha, 240, 10, erode_size=3)  # a 3x3 square: one pixel off each side
    assert (eroded == 1.0).sum() == 8 * 8 and eroded[5, 5] == 0.5 and eroded[10, 3] == 0.5


def test_closed_form_matting_recovers_a_soft_edge_from_a_hard_mask():
    photo, alpha = blended_scene()
    hard = (alpha > 0.5).astype(np.float32)
    out = matte(photo, trimap(hard, erode_size=12), fallback=hard)  # unknown band wider than the blend
    assert np.abs(out - alpha).max() < 0.01
    assert np.abs(hard - alpha).max() > 0.4


def test_matting_in_tiles_matches_one_solve(monkeypatch):
    photo, alpha = blended_scene(96)
    tri = trimap((alpha > 0.5).astype(np.float32), erode_size=12)
    whole = matte(photo, tri, fallback=alpha)
    monkeypatch.setattr(matting, "TILE", 40)
    tiled = matte(photo, tri, fallback=alpha)
    assert np.abs(tiled - whole).max() < 0.02


def test_foreground_estimation_takes_the_old_background_out_of_the_soft_band():
    photo, alpha = blended_scene()
    colours = foreground(photo, alpha)
    band = (alpha > 0.2) & (alpha < 0.8)
    assert np.abs(colours[band] - RED).mean() < 0.25 * np.abs(photo[band] - RED).mean()
    assert np.array_equal(colours[alpha == 1.0], photo[alpha == 1.0])  # opaque pixels keep their own


# --------------------------------------------------------------------------- the pipeline


def test_decontaminated_cutout_has_less_halo_on_white():
    photo, alpha = blended_scene()
    image = Image.fromarray(np.round(photo * 255).astype(np.uint8))
    # clean=False: the true, 10 px wide soft edge as alpha, so every blended pixel is soft
    plain_colours, plain_alpha = finish_edges(image, alpha, EdgeOptions(clean=False))
    clean_colours, clean_alpha8 = finish_edges(image, alpha, EdgeOptions(clean=False, decontaminate=True))
    assert np.array_equal(np.asarray(plain_alpha), np.asarray(clean_alpha8))  # only the colours change
    truth = alpha > 0.5
    rgb, a = np.asarray(image), np.asarray(plain_alpha)
    assert halo(rgb, np.asarray(clean_colours), a, truth) < 0.5 * halo(rgb, rgb, a, truth)


def test_decontamination_keeps_a_transparent_photos_own_alpha():
    photo, alpha = blended_scene(40)
    image = Image.fromarray(np.round(photo * 255).astype(np.uint8)).convert("RGBA")
    image.putalpha(200)
    colours, _ = finish_edges(image, alpha, EdgeOptions(decontaminate=True))
    assert colours.mode == "RGBA" and colours.getpixel((0, 0))[3] == 200


@pytest.mark.parametrize("refine", ["guided", "matting"])
def test_refinement_keeps_the_product_and_the_background(refine):
    photo, alpha = blended_scene()
    image = Image.fromarray(np.round(photo * 255).astype(np.uint8))
    _, out = finish_edges(image, ndimage.gaussian_filter(alpha, 3), EdgeOptions(refine=refine))
    out = np.asarray(out)
    assert out[:, :25].max() == 0 and out[:, 55:].min() == 255


@pytest.mark.parametrize("options, message", [
    (dict(refine="sharp"), "refine must be one of off, guided, matting"),
    (dict(foreground_threshold=300), "foreground threshold must be 0..255"),
    (dict(foreground_threshold=10, background_threshold=20), "must be below the foreground threshold"),
    (dict(erode_size=-1), "erode size"),
    (dict(clean=False, drop_fragments=True), "drop_fragments is a clean-up step"),
])
def test_edge_options_refuse_bad_values_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        EdgeOptions(**options)


def test_default_clean_up_lowers_ghost_on_real_photos_and_keeps_iou(tiny_pairs):
    """The default on real photos: every IoU and boundary F as before, less ghost and MAE on the
    whole (a photo where the model half-believes a shadow may get a little more)."""
    rows = [r for r in tiny_pairs if r["domain"] == "fashion"][:4] + [r for r in tiny_pairs if r["domain"] == "cars"][:2]
    photos = [Image.open(r["image"]).convert("RGB") for r in rows]
    probs = Predictor("u2netp").predict(photos)
    before, after = [], []
    for row, photo, prob in zip(rows, photos, probs):
        truth = np.asarray(Image.open(row["mask"])) > 127
        for options, out in ((EdgeOptions(clean=False), before), (EdgeOptions(), after)):
            alpha = np.asarray(finish_edges(photo, prob, options)[1], np.float32) / 255
            out.append({**image_metrics(alpha, truth), "ghost": ghost(alpha, truth)})
    for b, a in zip(before, after):
        assert a["iou"] == b["iou"] and a["boundary_f"] == b["boundary_f"]
    for key in ("mae", "ghost"):
        assert np.mean([a[key] for a in after]) < np.mean([b[key] for b in before])
        assert sum(a[key] < b[key] for a, b in zip(after, before)) > len(rows) / 2
