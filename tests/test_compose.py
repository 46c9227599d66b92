"""Turning a probability map into shop outputs: cutout, mask, solid colour, uniform canvas."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clearbg.inference.compose import Canvas, OutputOptions, compose, cutout, on_color, parse_color
from clearbg.inference.edges import EdgeOptions
from clearbg.inference.shadow import Shadow


def as_alpha(prob: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(prob * 255).astype(np.uint8), mode="L")


def square_scene(size=(200, 100), box=(60, 20, 100, 80)):
    """A red product on a blue background, and its exact probability map."""
    photo = Image.new("RGB", size, (0, 0, 255))
    photo.paste((255, 0, 0), box)
    prob = np.zeros((size[1], size[0]), np.float32)
    prob[box[1] : box[3], box[0] : box[2]] = 1.0
    return photo, prob


@pytest.mark.parametrize(
    "text, expected",
    [("#ffffff", (255, 255, 255)), ("fff", (255, 255, 255)), ("#10203040", (16, 32, 48, 64)), ("white", (255, 255, 255))],
)
def test_colours_parse_from_hex_and_names(text, expected):
    assert parse_color(text) == expected


def test_bad_colour_names_the_accepted_forms():
    with pytest.raises(ValueError, match="#ffffff"):
        parse_color("#12345")


def test_without_clean_up_the_mask_is_the_probability_in_8_bits():
    prob = np.array([[0.0, 0.3, 0.5, 1.0]], np.float32)
    mask = compose(Image.new("RGB", (4, 1)), prob, OutputOptions(mask_only=True, edges=EdgeOptions(clean=False)))
    assert mask.mode == "L" and np.asarray(mask).tolist() == [[0, 76, 128, 255]]


def test_cutout_keeps_the_photo_colours_and_uses_the_mask_as_alpha():
    photo, prob = square_scene()
    out = cutout(photo, as_alpha(prob))
    assert out.mode == "RGBA" and out.size == photo.size
    assert out.getpixel((80, 50)) == (255, 0, 0, 255)
    assert out.getpixel((5, 5)) == (0, 0, 0, 0)  # transparent black, not the blue under it


def test_cutout_keeps_colours_where_the_edge_is_soft_and_the_colour_profile():
    photo, prob = square_scene()
    prob[50, 59] = 0.4
    photo.info["icc_profile"] = b"fake-profile"
    out = cutout(photo, as_alpha(prob))
    assert out.getpixel((59, 50)) == (0, 0, 255, 102)
    assert out.info["icc_profile"] == b"fake-profile"


def test_cutout_of_a_transparent_photo_multiplies_the_alphas():
    photo = Image.new("RGBA", (4, 1), (9, 9, 9, 128))
    out = cutout(photo, Image.new("L", (4, 1), 255))
    assert out.getpixel((0, 0))[3] == 128


def test_solid_background_replaces_the_background_only():
    photo, prob = square_scene()
    out = on_color(photo, as_alpha(prob), (255, 255, 255))
    assert out.mode == "RGB"
    assert out.getpixel((5, 5)) == (255, 255, 255) and out.getpixel((80, 50)) == (255, 0, 0)


def test_canvas_centres_the_product_inside_the_margin():
    photo, prob = square_scene(size=(300, 200), box=(10, 10, 50, 90))  # product 40x80, off-centre
    canvas = Canvas(500, 500, margin=0.1)
    out = canvas.place(photo, as_alpha(prob), (255, 255, 255))
    assert out.size == (500, 500) and out.mode == "RGB"
    red = np.all(np.asarray(out) == (255, 0, 0), axis=2)
    ys, xs = np.nonzero(red)
    # Scaled to fill the 400 px of height left by the 10 % margins, centred horizontally.
    assert abs(ys.min() - 50) <= 2 and abs(ys.max() - 449) <= 2
    assert abs((xs.min() + xs.max()) / 2 - 249.5) <= 2
    assert out.getpixel((5, 5)) == (255, 255, 255)


def test_canvas_sizes_parse():
    assert Canvas.parse("1000x1200") == Canvas(1000, 1200)
    assert Canvas.parse("800") == Canvas(800, 800)
    with pytest.raises(ValueError, match="1000x1200"):
        Canvas.parse("big")


def test_compose_follows_the_options():
    photo, prob = square_scene()
    assert compose(photo, prob, OutputOptions(mask_only=True)).mode == "L"
    assert compose(photo, prob, OutputOptions(bg_color=(0, 0, 0))).mode == "RGB"
    assert compose(photo, prob).mode == "RGBA"
    assert compose(photo, prob, OutputOptions(canvas=Canvas(64, 64))).size == (64, 64)


def test_default_mask_is_cleaned_up():
    photo, prob = square_scene()
    prob[5:10, 5:10] = 0.3  # faint haze far from the product
    mask = np.asarray(compose(photo, prob, OutputOptions(mask_only=True)))
    assert mask[7, 7] == 0 and mask[50, 80] == 255


def test_shadow_darkens_the_background_under_the_product_only():
    photo, prob = square_scene(size=(200, 140), box=(80, 20, 120, 100))
    plain = np.asarray(compose(photo, prob, OutputOptions(bg_color=(255, 255, 255))))
    shaded = np.asarray(compose(photo, prob, OutputOptions(bg_color=(255, 255, 255), shadow=Shadow("contact"))))
    assert shaded[102, 100].max() < 255 and plain[102, 100].tolist() == [255, 255, 255]
    assert shaded[10, 10].tolist() == [255, 255, 255]       # far from the base: untouched
    assert shaded[60, 100].tolist() == [255, 0, 0]          # the product sits on top of its shadow


def test_shadow_on_a_transparent_cutout_is_semi_transparent_black():
    photo, prob = square_scene(size=(200, 140), box=(80, 20, 120, 100))
    out = compose(photo, prob, OutputOptions(shadow=Shadow("drop", blur=0.0, offset=(0.1, 0.1))))
    assert out.mode == "RGBA"
    r, g, b, a = out.getpixel((123, 102))  # beside and below the product: the offset silhouette
    assert (r, g, b) == (0, 0, 0) and 0 < a < 255


def test_canvas_shadow_is_cast_on_the_canvas_and_reaches_into_the_margin():
    photo, prob = square_scene(size=(300, 200), box=(10, 10, 50, 90))
    canvas = Canvas(500, 500, margin=0.1)
    out = np.asarray(canvas.place(photo, as_alpha(prob), (255, 255, 255), Shadow("contact", opacity=1.0)))
    # the product fills rows 50..449; its contact shadow lies in the bottom margin below it
    assert out[455, 250].max() < 200 and out[455, 20].tolist() == [255, 255, 255]


def test_a_shadow_on_a_mask_is_refused():
    with pytest.raises(ValueError, match="shadow needs a cutout"):
        OutputOptions(mask_only=True, shadow=Shadow())
