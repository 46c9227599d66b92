"""The shadow under the product: where it falls, how dark and soft it is, what it refuses."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clearbg.inference.shadow import Shadow, shadow_alpha


def product_mask(size=(200, 200), box=(70, 40, 130, 160)) -> Image.Image:
    """A 60 x 120 px product standing on row 160."""
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def test_contact_shadow_lies_on_the_floor_under_the_base_only():
    shade = np.asarray(shadow_alpha(product_mask(), Shadow("contact", opacity=1.0, blur=0.03)))
    rows = np.nonzero(shade.max(axis=1))[0]
    assert rows.min() > 140 and rows.max() < 185  # a thin band around row 160, nothing up the product
    assert shade[165, 100] > 0 and shade[165, 100] > shade[165, 75]  # darkest under the middle of the base
    assert shade[165, 20] == 0 and shade[165, 180] == 0  # no wider than the base and its blur


def test_drop_shadow_is_the_silhouette_offset_down_right():
    shade = np.asarray(shadow_alpha(product_mask(), Shadow("drop", opacity=1.0, blur=0.0, offset=(0.1, 0.05))))
    ys, xs = np.nonzero(shade)
    # 10 % and 5 % of the product's 120 px height: 12 px right, 6 px down
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (82, 46, 141, 165)


def test_opacity_scales_the_darkness_and_zero_casts_nothing():
    mask = product_mask()
    dark = np.asarray(shadow_alpha(mask, Shadow("drop", opacity=0.8, blur=0.0)))
    light = np.asarray(shadow_alpha(mask, Shadow("drop", opacity=0.4, blur=0.0)))
    assert dark.max() == 204 and light.max() == 102
    assert np.asarray(shadow_alpha(mask, Shadow("drop", opacity=0.0))).max() == 0


def test_blur_softens_the_shadow_in_proportion_to_the_product():
    mask = product_mask()
    sharp = np.asarray(shadow_alpha(mask, Shadow("drop", opacity=1.0, blur=0.0)))
    soft = np.asarray(shadow_alpha(mask, Shadow("drop", opacity=1.0, blur=0.05)))
    assert np.count_nonzero((sharp > 0) & (sharp < 255)) == 0
    assert np.count_nonzero((soft > 0) & (soft < 255)) > 500
    big = np.asarray(shadow_alpha(mask.resize((400, 400)), Shadow("drop", opacity=1.0, blur=0.05)))
    # the same shadow at twice the size: twice as wide a soft rim, about 4x the pixels
    ratio = np.count_nonzero((big > 0) & (big < 255)) / np.count_nonzero((soft > 0) & (soft < 255))
    assert 3 < ratio < 5


def test_an_empty_mask_casts_no_shadow():
    assert shadow_alpha(Image.new("L", (50, 50)), Shadow()).getextrema() == (0, 0)


@pytest.mark.parametrize("values, message", [
    (dict(kind="3d"), "shadow must be one of contact, drop"),
    (dict(opacity=1.5), "opacity must be 0..1"),
    (dict(blur=-0.1), "blur must be 0..0.5"),
    (dict(offset=(2.0, 0.0)), "offset must be within -1..1"),
])
def test_bad_shadow_values_are_refused_by_name(values, message):
    with pytest.raises(ValueError, match=message):
        Shadow(**values)


def test_offsets_parse_from_text():
    assert Shadow.parse_offset("0.02, 0.03") == (0.02, 0.03)
    with pytest.raises(ValueError, match="right, down"):
        Shadow.parse_offset("down")
