"""Augmentation keeps photo and mask aligned, is reproducible, and each op does what it says."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clearbg.data.augment import (
    BG_KINDS,
    AugmentConfig,
    augment,
    color_jitter,
    crop_resize,
    draw_caption,
    feather_alpha,
    paste_foreground,
    random_box,
    recolour_background,
    side_by_side,
)

SIZE = (96, 128)  # (W, H) of the test pairs

# Geometry and combination on, often; photometric off. Greys only, so that no generated
# background is itself "red" in the synthetic alignment check below.
GEOMETRY = AugmentConfig(
    p_crop=1.0, p_flip=0.5, p_combine=0.4, p_side_by_side=0.3, p_bg_recolour=0.3, p_jitter=0.0, bg_kinds={"grey": 1.0}
)


@pytest.fixture(scope="module")
def pairs(tiny_pairs) -> list[tuple[np.ndarray, np.ndarray]]:
    """8 real pairs (6 fashion, 2 cars), resized to 96x128: photo bilinear, mask nearest."""
    fashion = [r for r in tiny_pairs if r["domain"] == "fashion"][::4]
    cars = [r for r in tiny_pairs if r["domain"] == "cars"][:2]
    out = []
    for row in fashion + cars:
        photo = np.asarray(Image.open(row["image"]).convert("RGB").resize(SIZE, Image.Resampling.BILINEAR))
        mask = np.asarray(Image.open(row["mask"]).convert("L").resize(SIZE, Image.Resampling.NEAREST))
        out.append((photo, mask))
    return out


def synthetic(mask: np.ndarray) -> np.ndarray:
    """A photo whose colour IS the mask: foreground pure red, background pure green."""
    return np.stack([mask, 255 - mask, np.zeros_like(mask)], axis=-1)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels on either side of a foreground/background edge."""
    fg = mask >= 128
    edge = np.zeros_like(fg)
    dx, dy = fg[:, 1:] != fg[:, :-1], fg[1:] != fg[:-1]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:] |= dy
    edge[:-1] |= dy
    return edge


def misaligned(photo: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """(pixels whose synthetic colour contradicts the mask, boundary pixels).

    Foreground must be red-dominant; background may be green, a grey, or a faint red blend in
    the background's soft edge, but never strongly red.
    """
    redness = photo[..., 0].astype(int) - photo[..., 1].astype(int)
    bad = ((mask == 255) & (redness <= 0)) | ((mask == 0) & (redness > 160))
    return int(bad.sum()), int(boundary(mask).sum())


def run_synthetic(pairs, config, seeds, size=(80, 80), broken=lambda p: p) -> float:
    """Misaligned pixels per boundary pixel, over many seeds and pairs."""
    bad = edge = 0
    for seed in seeds:
        i, j = seed % len(pairs), (seed + 1) % len(pairs)
        other = lambda: (synthetic(pairs[j][1]), pairs[j][1])  # noqa: E731
        photo, mask = augment(synthetic(pairs[i][1]), pairs[i][1], np.random.default_rng(seed), config, size, other)
        b, e = misaligned(broken(photo), mask)
        bad, edge = bad + b, edge + e
    return bad / edge


def edge_score(photo: np.ndarray, mask: np.ndarray) -> tuple[float, int, float]:
    """(sum of the photo's gradient on the mask boundary, boundary pixels, mean gradient)."""
    grey = photo.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    gx, gy = np.zeros_like(grey), np.zeros_like(grey)
    gx[:, 1:-1] = grey[:, 2:] - grey[:, :-2]
    gy[1:-1] = grey[2:] - grey[:-2]
    magnitude = np.hypot(gx, gy)
    edge = boundary(mask)
    return float(magnitude[edge].sum()), int(edge.sum()), float(magnitude.mean())


# --------------------------------------------------------------------------- alignment


def test_geometry_and_combination_keep_photo_and_mask_aligned(pairs):
    # Correct code: ~0.01 misaligned pixels per boundary pixel (sub-pixel rounding of the
    # anti-aliased paste edge); a half-pixel shift gives ~0.3, one pixel ~0.6, a flip > 4.
    assert run_synthetic(pairs, GEOMETRY, range(150)) < 0.05
    assert run_synthetic(pairs, GEOMETRY, range(150, 200), size=(48, 96)) < 0.05  # another aspect


def test_pasted_foreground_stays_aligned_through_the_pipeline(pairs):
    # On an empty base every foreground pixel comes from the paste, so a paste that put the
    # mask elsewhere than the photo shows in full. Correct: ~0.05 (the paste's anti-aliased
    # edge is resampled twice); the mask pasted one pixel lower than the photo: ~0.15.
    config = AugmentConfig(p_crop=1.0, p_combine=1.0, p_side_by_side=0.0, p_bg_recolour=0.0, p_jitter=0.0)
    empty = np.zeros_like(pairs[0][1])
    bad = edge = 0
    for seed in range(100):
        j = seed % len(pairs)
        other = lambda j=j: (synthetic(pairs[j][1]), pairs[j][1])  # noqa: E731
        photo, mask = augment(synthetic(empty), empty, np.random.default_rng(seed), config, (80, 80), other)
        assert mask.any()
        b, e = misaligned(photo, mask)
        bad, edge = bad + b, edge + e
    assert bad / edge < 0.09


def test_alignment_check_fails_when_a_transform_moves_only_the_photo(pairs):
    # The same check on deliberately broken pipelines: flip / shift the photo but not the mask.
    assert run_synthetic(pairs, GEOMETRY, range(40), broken=lambda p: p[:, ::-1]) > 1.0
    assert run_synthetic(pairs, GEOMETRY, range(40), broken=lambda p: np.roll(p, 1, axis=1)) > 0.3
    # A crop box half a pixel off for the photo only (the classic resize-convention bug).
    bad = edge = 0
    for seed in range(60):
        mask = pairs[seed % len(pairs)][1]
        x0, y0, x1, y1 = random_box(np.random.default_rng(seed), *SIZE, 1.0, scale=(0.5, 0.9), aspect=(0.8, 1.25))
        d = 0.5 if x1 + 0.5 <= SIZE[0] and y1 + 0.5 <= SIZE[1] else -0.5
        photo, _ = crop_resize(synthetic(mask), mask, (x0 + d, y0 + d, x1 + d, y1 + d), (80, 80))
        _, out_mask = crop_resize(synthetic(mask), mask, (x0, y0, x1, y1), (80, 80))
        b, e = misaligned(photo, out_mask)
        bad, edge = bad + b, edge + e
    assert bad / edge > 0.15


def test_real_photo_edges_follow_the_augmented_mask(pairs):
    """On real photos the mask boundary sits on strong photo edges, before and after augmenting."""

    def score(outputs) -> float:
        total = count = mean = 0.0
        for photo, mask in outputs:
            s, n, m = edge_score(photo, mask)
            total, count, mean = total + s, count + n, mean + m
        return (total / count) / (mean / len(outputs))

    original = score(pairs)  # ~2.75: boundary gradient / mean gradient
    config = AugmentConfig(p_bg_recolour=0.0, p_side_by_side=0.0, p_jitter=0.0, p_combine=0.3)  # new backgrounds would make edges on their own
    outputs = []
    for seed in range(80):
        i, j = seed % len(pairs), (seed + 3) % len(pairs)
        outputs.append(augment(*pairs[i], np.random.default_rng(seed), config, (80, 80), other=lambda j=j: pairs[j]))
    assert score(outputs) > 0.7 * original  # measured ~0.85
    assert score([(p[:, ::-1], m) for p, m in outputs]) < 0.6 * original  # photo flipped only: ~0.47
    assert score([(np.roll(p, 2, axis=1), m) for p, m in outputs]) < 0.6 * original  # shifted 2 px: ~0.51


# --------------------------------------------------------------------------- reproducibility, config


def test_same_rng_state_gives_identical_output_and_another_differs(pairs):
    photo, mask = pairs[0]

    def run(seed):
        return augment(photo, mask, np.random.default_rng([seed, 0, 0]), AugmentConfig(strength=1.5), (64, 64), other=lambda: pairs[1])

    a, b, c = run(1), run(1), run(2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_no_augmentation_only_resizes_and_keeps_masks_binary(pairs):
    photo, mask = pairs[0]
    out_photo, out_mask = augment(photo, mask, np.random.default_rng(0), AugmentConfig.none(), (48, 64), other=lambda: pairs[1])
    expected = crop_resize(photo, mask, (0, 0, *SIZE), (48, 64))
    assert np.array_equal(out_photo, expected[0]) and np.array_equal(out_mask, expected[1])
    assert out_photo.shape == (64, 48, 3) and out_photo.dtype == np.uint8
    assert set(np.unique(out_mask)) <= {0, 255}
    # Same size in and out: exactly the input.
    same = augment(photo, mask, np.random.default_rng(0), AugmentConfig.none(), SIZE)
    assert np.array_equal(same[0], photo) and np.array_equal(same[1], mask)


def test_masks_stay_binary_unless_the_input_mask_is_soft(pairs):
    photo, mask = pairs[0]
    for seed in range(20):
        out = augment(photo, mask, np.random.default_rng(seed), AugmentConfig(strength=2), (70, 50), other=lambda: pairs[2])
        assert set(np.unique(out[1])) <= {0, 255}
    soft = np.asarray(Image.fromarray(mask).resize((24, 32), Image.Resampling.BILINEAR).resize(SIZE, Image.Resampling.BILINEAR))
    assert len(np.unique(soft)) > 2
    out = augment(photo, soft, np.random.default_rng(0), AugmentConfig.none(), (48, 64))
    assert len(np.unique(out[1])) > 2


def test_strength_scales_probabilities_and_ranges():
    config = AugmentConfig(strength=2.0, p_combine=0.4, crop_scale=(0.6, 1.0), brightness=0.1)
    assert config._p(config.p_combine) == 0.8 and config._p(0.7) == 1.0
    assert config._range(config.crop_scale, neutral=1.0) == pytest.approx((0.2, 1.0))
    assert AugmentConfig(strength=0.5)._range((0.8, 1.25), 1.0, log=True) == pytest.approx((0.8**0.5, 1.25**0.5))
    zero = AugmentConfig.none()
    assert zero._p(1.0) == 0 and zero._range((0.5, 1.0), 1.0) == (1.0, 1.0)


def test_config_reads_lists_from_yaml_and_rejects_bad_values():
    config = AugmentConfig.from_dict({"crop_scale": [0.5, 1.0], "strength": 0.7})
    assert config.crop_scale == (0.5, 1.0)
    assert AugmentConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown augmentation setting.*p_flop"):
        AugmentConfig.from_dict({"p_flop": 0.5})
    with pytest.raises(ValueError, match="p_combine"):
        AugmentConfig(p_combine=1.5)
    with pytest.raises(ValueError, match="bg_kinds"):
        AugmentConfig(bg_kinds={"plaid": 1.0})
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.9, 0.5))


def test_augment_rejects_mismatched_photo_and_mask(pairs):
    photo, mask = pairs[0]
    with pytest.raises(ValueError, match="same size"):
        augment(photo, mask[:-1], np.random.default_rng(0), AugmentConfig(), (32, 32))


# --------------------------------------------------------------------------- single ops


@pytest.mark.parametrize("kind", BG_KINDS)
def test_background_recolour_changes_only_background_pixels(pairs, kind):
    photo, mask = pairs[1]
    out = recolour_background(photo, mask, np.random.default_rng(3), kind)
    fg = mask == 255
    assert np.array_equal(out[fg], photo[fg])  # foreground exactly unchanged
    far_bg = ~(mask == 255) & ~boundary(mask)
    changed = np.any(out != photo, axis=-1)
    assert changed[far_bg].mean() > 0.9


def test_recolour_inside_augment_leaves_foreground_exactly_unchanged(pairs):
    photo, mask = pairs[2]
    config = AugmentConfig(p_crop=0, p_flip=0, p_bg_recolour=1.0, p_combine=0, p_side_by_side=0, p_jitter=0)
    for seed in range(10):
        out_photo, out_mask = augment(photo, mask, np.random.default_rng(seed), config, SIZE, other=lambda: pairs[3])
        assert np.array_equal(out_mask, mask)
        assert np.array_equal(out_photo[mask == 255], photo[mask == 255])
        assert not np.array_equal(out_photo[mask == 0], photo[mask == 0])


def test_recolour_has_a_soft_outward_edge_and_no_other_blending(pairs):
    _, mask = pairs[0]
    alpha = feather_alpha(mask, 1)
    assert np.all(alpha[mask == 255] == 1)
    ring = boundary(mask) & (mask == 0)
    assert np.all((alpha[ring] > 0) & (alpha[ring] < 1))  # the first background pixels fade
    assert alpha[(mask == 0) & ~ring].max() < 0.5  # only diagonal neighbours of corners, faintly


def test_close_background_is_nearer_the_product_colour_than_random_colours(pairs):
    photo, mask = pairs[0]
    fg_mean = photo[mask == 255].astype(float).mean(0)

    def distance(kind):
        out = [recolour_background(photo, mask, np.random.default_rng(s), kind, noise=0) for s in range(30)]
        return np.mean([np.linalg.norm(o[mask == 0].astype(float).mean(0) - fg_mean) for o in out])

    assert distance("close") < 0.5 * distance("solid")


def test_combine_pastes_the_other_foreground_where_its_mask_says_and_mask_is_the_union(pairs):
    (photo, mask), (photo2, mask2) = pairs[0], pairs[6]  # a person and a car
    out_photo, out_mask = paste_foreground(photo, mask, photo2, mask2)
    fg2 = mask2 == 255
    assert np.array_equal(out_photo[fg2], photo2[fg2])
    assert np.array_equal(out_photo[~fg2], photo[~fg2])
    assert np.array_equal(out_mask, np.maximum(mask, mask2))
    # Smaller, at an offset: only that window changes.
    small_photo, small_mask = photo2[:40, :30], mask2[:40, :30]
    out_photo, out_mask = paste_foreground(photo, mask, small_photo, small_mask, offset=(50, 70))
    window = (slice(70, 110), slice(50, 80))
    assert np.array_equal(out_mask[window], np.maximum(mask[window], small_mask))
    outside = np.ones(mask.shape, bool)
    outside[window] = False
    assert np.array_equal(out_photo[outside], photo[outside]) and np.array_equal(out_mask[outside], mask[outside])
    with pytest.raises(ValueError, match="does not fit"):
        paste_foreground(photo, mask, photo2, mask2, offset=(1, 0))


def test_side_by_side_mask_is_the_two_masks_next_to_each_other(pairs):
    (photo, mask), (photo2, mask2) = pairs[0], pairs[1]
    canvas, canvas_mask = side_by_side(photo, mask, photo2, mask2, out_aspect=1.0)
    # 2 x 96 wide, 128 high -> padded to 192 x 192, 32 rows above and below.
    assert canvas_mask.shape == (192, 192) and canvas.shape == (192, 192, 3)
    assert np.array_equal(canvas_mask[32:160], np.concatenate([mask, mask2], axis=1))
    assert np.array_equal(canvas[32:160], np.concatenate([photo, photo2], axis=1))
    assert not canvas_mask[:32].any() and not canvas_mask[160:].any()
    _, swapped = side_by_side(photo, mask, photo2, mask2, out_aspect=1.0, swap=True)
    assert np.array_equal(swapped[32:160], np.concatenate([mask2, mask], axis=1))
    # A narrow output: padded left and right instead.
    _, narrow = side_by_side(photo, mask, photo2, mask2, out_aspect=0.5)
    assert narrow.shape == (384, 192)


def test_color_jitter_is_identity_at_factor_one_and_changes_the_photo_otherwise(pairs):
    photo, _ = pairs[0]
    assert np.array_equal(color_jitter(photo), photo)
    brighter = color_jitter(photo, brightness=1.2)
    assert brighter.astype(float).mean() > photo.astype(float).mean() + 5
    grey = color_jitter(photo, saturation=0.0)
    assert np.abs(grey[..., 0].astype(int) - grey[..., 2]).max() <= 1


# --------------------------------------------------------------------------- captions


def test_captions_change_the_photo_and_never_the_mask(pairs):
    photo, mask = pairs[0]
    plain = AugmentConfig(p_crop=1.0, p_jitter=0.0, p_combine=0.0, p_side_by_side=0.0)
    captioned = AugmentConfig(p_crop=1.0, p_jitter=0.0, p_combine=0.0, p_side_by_side=0.0, p_caption=1.0)
    changed = 0
    for seed in range(8):
        a = augment(photo, mask, np.random.default_rng(seed), plain, (96, 96))
        b = augment(photo, mask, np.random.default_rng(seed), captioned, (96, 96))
        assert np.array_equal(a[1], b[1])  # the caption is background wherever it lands
        differs = np.any(a[0] != b[0], axis=2)
        changed += int(differs.any())
        # Text pixels only: a caption is thin strokes, never a repainted frame.
        assert differs.mean() < 0.4
    assert changed >= 6  # a caption may run off the frame now and then, not usually


def test_draw_caption_is_reproducible_and_varies_with_the_seed(pairs):
    photo = np.full((120, 160, 3), 128, np.uint8)
    a, b = draw_caption(photo, np.random.default_rng(3)), draw_caption(photo, np.random.default_rng(3))
    assert np.array_equal(a, b) and a.shape == photo.shape and a.dtype == np.uint8
    assert not np.array_equal(a, draw_caption(photo, np.random.default_rng(4)))
    with pytest.raises(ValueError, match="p_caption"):
        AugmentConfig(p_caption=2.0)
    with pytest.raises(ValueError, match="caption_height"):
        AugmentConfig(caption_height=(0.2, 1.5))

