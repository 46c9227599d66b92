"""From a probability map to what a web shop publishes: cutout, mask, solid background, canvas.

The edge itself (clean-up, refinement, decontamination) is ``clearbg.inference.edges``; the
optional shadow under the product is ``clearbg.inference.shadow``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from clearbg.errors import shown
from clearbg.inference.edges import EdgeOptions, finish_edges
from clearbg.inference.shadow import Shadow, shadow_alpha


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
    """Probability (0..1 float) -> 8-bit mask image (mode L, 0 = background, 255 = product), with no
    edge finishing: the model's own mask, as the review queue stores and the pyfunc flavour returns it."""
    return Image.fromarray(np.round(prob * 255.0).astype(np.uint8), mode="L")


def cutout(image: Image.Image, alpha: Image.Image) -> Image.Image:
    """RGBA at full resolution: the photo's own colours with the mask as alpha.

    A photo that already had transparency keeps it (the two alphas multiply). Fully transparent
    pixels are stored as transparent black, as rembg writes them: their colours are invisible,
    and the photo's background under them made a 550x830 PNG 2.7x larger (556 -> 205 KiB) and
    2.4x slower to encode (54 -> 22 ms, more than a third of the network's time).
    """
    values = np.asarray(alpha, np.uint8)
    if image.mode == "RGBA":
        values = (values.astype(np.uint16) * np.asarray(image.getchannel("A"), np.uint16) // 255).astype(np.uint8)
    rgba = np.dstack([np.asarray(image.convert("RGB")), values])
    rgba[values == 0] = 0
    out = Image.fromarray(rgba, "RGBA")
    out.info.update((key, value) for key, value in image.info.items() if key != "transparency")  # ICC, DPI
    return out


def on_color(image: Image.Image, alpha: Image.Image, color: Color, shadow: Shadow | None = None) -> Image.Image:
    """Composite the cutout over a solid colour (and its shadow): RGB, or RGBA if the colour
    has alpha (``(0, 0, 0, 0)``: a transparent cutout that keeps the shadow)."""
    background = Image.new("RGBA", image.size, color if len(color) == 4 else (*color, 255))
    if shadow is not None:
        background.alpha_composite(_shade(alpha, shadow))
    composed = Image.alpha_composite(background, cutout(image, alpha))
    return composed if len(color) == 4 else composed.convert("RGB")


def _shade(alpha: Image.Image, shadow: Shadow) -> Image.Image:
    """The shadow of the product in ``alpha`` as a black RGBA layer."""
    layer = Image.new("RGBA", alpha.size, (0, 0, 0, 0))
    layer.putalpha(shadow_alpha(alpha, shadow))
    return layer


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

    def place(self, image: Image.Image, alpha: Image.Image, color: Color | None = None,
              shadow: Shadow | None = None) -> Image.Image:
        """Crop the product to its bounding box, scale it to fit inside the margins, centre it
        (over its shadow, cast on the canvas so it may reach into the margin)."""
        box = alpha.point(lambda v: 255 if v >= self.threshold else 0).getbbox() or (0, 0, *image.size)
        product = cutout(image, alpha).crop(box)
        room_w = max(1, round(self.width * (1 - 2 * self.margin)))
        room_h = max(1, round(self.height * (1 - 2 * self.margin)))
        scale = min(room_w / product.width, room_h / product.height)
        size = (max(1, round(product.width * scale)), max(1, round(product.height * scale)))
        product = product.resize(size, Image.Resampling.LANCZOS)
        fill = (0, 0, 0, 0) if color is None else (color if len(color) == 4 else (*color, 255))
        canvas = Image.new("RGBA", (self.width, self.height), fill)
        where = ((self.width - size[0]) // 2, (self.height - size[1]) // 2)
        if shadow is not None:
            placed = Image.new("L", canvas.size, 0)
            placed.paste(product.getchannel("A"), where)
            canvas.alpha_composite(_shade(placed, shadow))
        canvas.alpha_composite(product, where)
        return canvas if color is None or len(color) == 4 else canvas.convert("RGB")


@dataclass(frozen=True)
class OutputOptions:
    """What to make of each photo.

    Attributes:
        mask_only: write the 8-bit mask (mode L) instead of a cutout.
        bg_color: solid background behind the product (None = transparent).
        canvas: place the product on a uniform canvas (None = keep the photo's frame).
        edges: clean-up, refinement and colour decontamination of the edge (``EdgeOptions``).
        shadow: a shadow under the product (None = none); on a transparent cutout it is
            semi-transparent black. Not with ``mask_only``.
    """

    mask_only: bool = False
    bg_color: Color | None = None
    canvas: Canvas | None = None
    edges: EdgeOptions = EdgeOptions()
    shadow: Shadow | None = None

    def __post_init__(self) -> None:
        if self.mask_only and self.shadow is not None:
            raise ValueError("a shadow needs a cutout, not a mask: leave out the shadow or the mask option")


def compose(image: Image.Image, prob: np.ndarray, options: OutputOptions = OutputOptions()) -> Image.Image:
    """The output image for one photo and its probability map."""
    colours, alpha = finish_edges(image, prob, options.edges)
    if options.mask_only:
        return alpha
    if options.canvas is not None:
        return options.canvas.place(colours, alpha, options.bg_color, options.shadow)
    if options.bg_color is not None:
        return on_color(colours, alpha, options.bg_color, options.shadow)
    if options.shadow is not None:
        return on_color(colours, alpha, (0, 0, 0, 0), options.shadow)
    return cutout(colours, alpha)
