"""From a probability map to what a web shop publishes: cutout, mask, solid background, canvas."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from clearbg.errors import shown


Color = tuple[int, int, int] | tuple[int, int, int, int]


def parse_color(text: str) -> Color:
    """``#fff``, ``ffffff``, ``#ffffff80`` or a few names (white, black, grey) -> RGB(A) tuple.

    Raises:
        ValueError: not a colour we understand (the message shows the accepted forms).
    """
    names = {"white": "ffffff", "black": "000000", "grey": "808080", "gray": "808080", "transparent": "00000000"}
    raw = names.get(text.strip().lower(), text.strip().lstrip("#"))
    if len(raw) in (3, 4):
        raw = "".join(c * 2 for c in raw)
    try:
        if len(raw) not in (6, 8):
            raise ValueError
        values = tuple(int(raw[i : i + 2], 16) for i in range(0, len(raw), 2))
    except ValueError:
        raise ValueError(f"not a colour: {shown(text)}; use hex like #ffffff, #fff or #ffffff80, or white/black/grey") from None
    return values  # type: ignore[return-value]


def alpha_from_prob(prob: np.ndarray) -> Image.Image:
    """Probability (0..1 float) -> 8-bit mask image (mode L, 0 = background, 255 = product)."""
    return Image.fromarray(np.round(prob * 255.0).astype(np.uint8), mode="L")


def cutout(image: Image.Image, alpha: Image.Image) -> Image.Image:
    """RGBA at full resolution: the photo's own colours with the mask as alpha.

    A photo that already had transparency keeps it (the two alphas multiply).
    """
    rgba = image.convert("RGBA")
    if image.mode == "RGBA":
        alpha = Image.fromarray(
            (np.asarray(alpha, np.uint16) * np.asarray(image.getchannel("A"), np.uint16) // 255).astype(np.uint8)
        )
    rgba.putalpha(alpha)
    return rgba


def on_color(image: Image.Image, alpha: Image.Image, color: Color) -> Image.Image:
    """Composite the cutout over a solid colour: RGB, or RGBA if the colour has alpha."""
    background = Image.new("RGBA", image.size, color if len(color) == 4 else (*color, 255))
    composed = Image.alpha_composite(background, cutout(image, alpha))
    return composed if len(color) == 4 else composed.convert("RGB")


@dataclass(frozen=True)
class Canvas:
    """A uniform shop canvas: every product centred on the same size with the same margin.

    Attributes:
        width, height: canvas size in pixels.
        margin: free border on each side, as a fraction of the canvas side (0.05 = 5 %).
        threshold: mask level (0..255) that counts as product when finding its bounding box.
    """

    width: int = 1000
    height: int = 1000
    margin: float = 0.05
    threshold: int = 128

    @classmethod
    def parse(cls, text: str, margin: float = 0.05) -> "Canvas":
        """``"1000x1200"`` or ``"1000"`` (square)."""
        try:
            w, _, h = text.lower().partition("x")
            return cls(int(w), int(h or w), margin)
        except ValueError:
            raise ValueError(f"canvas size must look like 1000x1200 or 1000, got {shown(text)}") from None

    def place(self, image: Image.Image, alpha: Image.Image, color: Color | None = None) -> Image.Image:
        """Crop the product to its bounding box, scale it to fit inside the margins, centre it."""
        box = alpha.point(lambda v: 255 if v >= self.threshold else 0).getbbox() or (0, 0, *image.size)
        product = cutout(image, alpha).crop(box)
        room_w = max(1, round(self.width * (1 - 2 * self.margin)))
        room_h = max(1, round(self.height * (1 - 2 * self.margin)))
        scale = min(room_w / product.width, room_h / product.height)
        size = (max(1, round(product.width * scale)), max(1, round(product.height * scale)))
        product = product.resize(size, Image.Resampling.LANCZOS)
        fill = (0, 0, 0, 0) if color is None else (color if len(color) == 4 else (*color, 255))
        canvas = Image.new("RGBA", (self.width, self.height), fill)
        canvas.alpha_composite(product, ((self.width - size[0]) // 2, (self.height - size[1]) // 2))
        return canvas if color is None or len(color) == 4 else canvas.convert("RGB")


@dataclass(frozen=True)
class OutputOptions:
    """What to make of each photo.

    Attributes:
        mask_only: write the 8-bit mask (mode L) instead of a cutout.
        bg_color: solid background behind the product (None = transparent).
        canvas: place the product on a uniform canvas (None = keep the photo's frame).
    """

    mask_only: bool = False
    bg_color: Color | None = None
    canvas: Canvas | None = None


def compose(image: Image.Image, prob: np.ndarray, options: OutputOptions = OutputOptions()) -> Image.Image:
    """The output image for one photo and its probability map."""
    alpha = alpha_from_prob(prob)
    if options.mask_only:
        return alpha
    if options.canvas is not None:
        return options.canvas.place(image, alpha, options.bg_color)
    if options.bg_color is not None:
        return on_color(image, alpha, options.bg_color)
    return cutout(image, alpha)
