"""From a photo and its probability map to the response body, with remove.bg's options.

Options follow remove.bg's API names: ``size`` (output resolution), ``crop`` and
``crop_margin`` (trim empty background, then add a margin), ``bg_color``, ``channels``
(``rgba`` cutout or the ``alpha`` mask only) and ``format`` (``auto``, ``png``, ``jpg``,
``zip`` with color.jpg + alpha.png; ``webp`` too), ``add_shadow`` with ``shadow_type`` and
``shadow_opacity`` (0..100). The edge options are the library's: ``clean``,
``drop_fragments``, ``fill_holes``, ``refine``, the
``alpha_matting_*`` trimap parameters (rembg's names) and ``decontaminate``. The pixel work
itself is ``clearbg.inference.compose`` and ``clearbg.inference.edges``; this module only
arranges it.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image

from clearbg import imageio
from clearbg.errors import shown
from clearbg.inference.compose import Color, cutout, on_color, parse_color
from clearbg.inference.edges import EdgeOptions, finish_edges
from clearbg.inference.shadow import Shadow

SIZES: dict[str, int | None] = {
    "preview": 250_000, "small": 250_000, "regular": 250_000,
    "medium": 1_500_000, "hd": 4_000_000,
    "full": None, "4k": None, "50mp": None, "auto": None,
}
"""remove.bg ``size`` -> largest output pixel count (None: the photo's own resolution)."""

FORMATS = ("auto", "png", "jpg", "zip", "webp")
CHANNELS = ("rgba", "alpha")

CROP_THRESHOLD = 16
"""Mask level (0..255) that counts as product when cropping: keeps most of the soft edge."""

MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "zip": "application/zip"}


@dataclass(frozen=True)
class RenderOptions:
    """What the client asked for; build it with ``RenderOptions.parse`` to validate.

    Attributes:
        size: a key of ``SIZES``.
        crop: trim the result to the product's bounding box.
        margin: (top, right, bottom, left) margins for the crop, each ``(value, unit)`` with
            unit ``"px"`` or ``"%"`` (of the product's height for top/bottom, width for sides).
        bg_color: solid background (None = transparent).
        channels: ``rgba`` (cutout) or ``alpha`` (the mask only).
        format: a member of ``FORMATS``.
        edges: clean-up, refinement, decontamination (``EdgeOptions``).
        shadow: a shadow under the product, or None. In a ``zip`` it is in color.jpg when
            there is a ``bg_color``; alpha.png is always the product's own.
    """

    size: str = "auto"
    crop: bool = False
    margin: tuple[tuple[float, str], ...] = ((0.0, "px"),) * 4
    bg_color: Color | None = None
    channels: str = "rgba"
    format: str = "auto"
    edges: EdgeOptions = EdgeOptions()
    shadow: Shadow | None = None

    @classmethod
    def parse(
        cls, *, size: str = "auto", crop: bool = False, crop_margin: str = "0", bg_color: str | None = None,
        channels: str = "rgba", format: str = "auto", clean: bool = True, drop_fragments: bool = False,
        fill_holes: bool = False, refine: str = "off",
        alpha_matting_foreground_threshold: int = 240, alpha_matting_background_threshold: int = 10,
        alpha_matting_erode_size: int = 10, decontaminate: bool = False, add_shadow: bool = False,
        shadow_type: str = "contact", shadow_opacity: int = 50,
    ) -> "RenderOptions":
        """Validate user-facing values (``"10%"``, ``"81d4fa"``, ...).

        Raises:
            ValueError: a value we do not accept; the message names the parameter.
            ImportError: ``refine=matting`` or ``decontaminate`` where PyMatting is not installed.

        Example:
            >>> RenderOptions.parse(crop=True, crop_margin="10px 5%").margin[1]
            (5.0, '%')
        """
        size, channels, format = size.lower(), channels.lower(), format.lower()
        if size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}, got {shown(size)}")
        if channels not in CHANNELS:
            raise ValueError(f"channels must be rgba or alpha, got {shown(channels)}")
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {shown(format)}")
        color = parse_color(bg_color) if bg_color else None
        edges = EdgeOptions(clean, drop_fragments, fill_holes, refine.lower(), alpha_matting_foreground_threshold,
                            alpha_matting_background_threshold, alpha_matting_erode_size, decontaminate)
        shadow = None
        if add_shadow:
            if channels == "alpha":
                raise ValueError("add_shadow needs channels=rgba: a shadow is not part of the alpha mask")
            if not 0 <= shadow_opacity <= 100:
                raise ValueError(f"shadow_opacity must be 0..100, got {shadow_opacity}")
            shadow = Shadow(shadow_type.lower(), opacity=shadow_opacity / 100)
        return cls(size, crop, parse_margin(crop_margin), color, channels, format, edges, shadow)

    def encodings(self) -> tuple[str, ...]:
        """The formats ``render`` encodes the result in: ``zip`` holds a JPEG and a PNG, and
        ``auto`` is PNG unless the result is opaque (on a solid colour without alpha)."""
        if self.format == "zip":
            return ("jpg", "png")
        if self.format != "auto":
            return (self.format,)
        opaque = self.channels == "rgba" and self.bg_color is not None and len(self.bg_color) == 3
        return ("jpg",) if opaque else ("png",)


def parse_margin(text: str) -> tuple[tuple[float, str], ...]:
    """remove.bg's ``crop_margin``: 1, 2 or 4 values like ``30px``, ``10%`` or ``0``.

    Returns:
        (top, right, bottom, left), CSS order.

    Raises:
        ValueError: malformed, negative, or over remove.bg's caps (500 px, 50 %).
    """
    parts = text.replace(",", " ").split()
    values = []
    for part in parts:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(px|%)?", part.strip().lower())
        if not match:
            raise ValueError(f"crop_margin values look like 30px or 10%, got {shown(part)}")
        value, unit = float(match.group(1)), match.group(2) or "px"
        if value > (500 if unit == "px" else 50):
            raise ValueError(f"crop_margin {shown(part)} is over the maximum of 500px or 50%")
        values.append((value, unit))
    if len(values) == 1:
        values *= 4
    elif len(values) == 2:
        values *= 2
    elif len(values) != 4:
        raise ValueError(f"crop_margin takes 1, 2 or 4 values, got {shown(text)}")
    return tuple(values)


def fit_size(image: Image.Image, size: str) -> Image.Image:
    """Shrink ``image`` (aspect kept) to the pixel budget of ``size``; never enlarges."""
    budget = SIZES[size]
    pixels = image.width * image.height
    if budget is None or pixels <= budget:
        return image
    scale = math.sqrt(budget / pixels)
    target = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(target, Image.Resampling.LANCZOS)


def crop_box(alpha: Image.Image, margin: tuple[tuple[float, str], ...]) -> tuple[int, int, int, int]:
    """The product's bounding box in ``alpha`` grown by ``margin`` (may reach past the photo)."""
    box = alpha.point(lambda v: 255 if v >= CROP_THRESHOLD else 0).getbbox() or (0, 0, *alpha.size)
    width, height = box[2] - box[0], box[3] - box[1]

    def px(index: int, extent: int) -> int:
        value, unit = margin[index]
        return round(value * extent / 100 if unit == "%" else value)

    return (box[0] - px(3, width), box[1] - px(0, height), box[2] + px(1, width), box[3] + px(2, height))


@dataclass(frozen=True)
class Rendered:
    """The response body, its media type and the result's size."""

    body: bytes
    media_type: str
    width: int
    height: int


def render(image: Image.Image, prob: np.ndarray, options: RenderOptions) -> Rendered:
    """Compose and encode the result for one photo.

    Args:
        image: the decoded photo (already shrunk with ``fit_size``).
        prob: its probability map, same size.
        options: see ``RenderOptions``.

    Returns:
        A ``Rendered``. ``format=auto`` gives PNG when the result has transparency (a cutout or
        a mask) and JPEG on an opaque background colour.

    Raises:
        OutputTooLarge: the result is larger than its format can store.

    Example:
        >>> render(photo, prob, RenderOptions.parse(bg_color="white")).media_type   # doctest: +SKIP
        'image/jpeg'
    """
    image, alpha = finish_edges(image, prob, options.edges)
    if options.crop:
        # Image.crop pads past the border with zeros: transparent for RGBA, background for L.
        box = crop_box(alpha, options.margin)
        image, alpha = image.crop(box), alpha.crop(box)
    if options.format == "zip":
        color = on_color(image, alpha, options.bg_color, options.shadow) if options.bg_color else image.convert("RGB")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("color.jpg", imageio.encode_image(color.convert("RGB"), "jpg", quality=95))
            archive.writestr("alpha.png", imageio.encode_image(alpha, "png"))
        return Rendered(buffer.getvalue(), MEDIA_TYPES["zip"], *alpha.size)
    if options.channels == "alpha":
        result = alpha
    elif options.bg_color is not None:
        result = on_color(image, alpha, options.bg_color, options.shadow)
    elif options.shadow is not None:
        result = on_color(image, alpha, (0, 0, 0, 0), options.shadow)
    else:
        result = cutout(image, alpha)
    [fmt] = options.encodings()
    return Rendered(imageio.encode_image(result, fmt, quality=95), MEDIA_TYPES[fmt], *result.size)
