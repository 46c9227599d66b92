"""An artificial shadow under the product, remove.bg's ``add_shadow``, for shop backgrounds.

A cutout on flat white looks pasted on; a soft shadow puts it on a floor. Two kinds:

* ``contact``: the shadow a product casts on the floor it stands on, lit from above: the
  footprint of its lowest ``FOOT`` of height (feet, wheels, the base of a bag), spread into a
  thin, soft band at its base. It stays under the product whatever its shape.
* ``drop``: the product's silhouette offset down and to the right and blurred, as from a
  light at the upper left: the classic catalogue shadow for flat-lying or hanging products.

Sizes are shares of the product's height, so a shadow looks the same on a 500 px canvas and on
the full-resolution photo. The result is an 8-bit opacity map; ``compose`` lays it, in black,
between the background and the product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from clearbg.errors import shown

__all__ = ["FOOT", "SHADOW_KINDS", "Shadow", "shadow_alpha"]

SHADOW_KINDS = ("contact", "drop")

FOOT = 0.08
"""The share of the product's height, from its base, whose outline a contact shadow follows."""

PRODUCT_LEVEL = 128
"""Alpha (0..255) that counts as product when measuring its box."""


@dataclass(frozen=True)
class Shadow:
    """What shadow to cast.

    Attributes:
        kind: ``contact`` or ``drop`` (see the module docstring).
        opacity: darkness at the shadow's core, 0..1.
        blur: softness, the Gaussian's radius as a share of the product's height.
        offset: ``drop`` only: (right, down) as shares of the product's height.
    """

    kind: str = "contact"
    opacity: float = 0.5
    blur: float = 0.03
    offset: tuple[float, float] = (0.02, 0.03)

    def __post_init__(self) -> None:
        if self.kind not in SHADOW_KINDS:
            raise ValueError(f"shadow must be one of {', '.join(SHADOW_KINDS)}, got {shown(self.kind)}")
        if not 0.0 <= self.opacity <= 1.0:
            raise ValueError(f"shadow opacity must be 0..1, got {self.opacity}")
        if not 0.0 <= self.blur <= 0.5:
            raise ValueError(f"shadow blur must be 0..0.5 of the product's height, got {self.blur}")
        if any(abs(v) > 1.0 for v in self.offset):
            raise ValueError(f"shadow offset must be within -1..1 of the product's height, got {self.offset}")

    @classmethod
    def parse_offset(cls, text: str) -> tuple[float, float]:
        """``"0.02,0.03"`` (right, down) -> (0.02, 0.03).

        Raises:
            ValueError: not two numbers.
        """
        try:
            right, down = (float(part) for part in text.replace(" ", "").split(","))
        except ValueError:
            raise ValueError(f"shadow offset looks like 0.02,0.03 (right, down), got {shown(text)}") from None
        return right, down


def shadow_alpha(alpha: Image.Image, shadow: Shadow) -> Image.Image:
    """The shadow's opacity (mode L, the size of ``alpha``) for the product in ``alpha``.

    Example:
        >>> mask = Image.new("L", (100, 100)); mask.paste(255, (40, 20, 60, 80))
        >>> shade = shadow_alpha(mask, Shadow("contact", opacity=1.0))
        >>> shade.getpixel((50, 81)) > 0, shade.getpixel((50, 10))  # under the base, not above
        (True, 0)
    """
    box = alpha.point(lambda v: 255 if v >= PRODUCT_LEVEL else 0).getbbox()
    if box is None or shadow.opacity == 0.0:
        return Image.new("L", alpha.size, 0)
    height = box[3] - box[1]
    radius = shadow.blur * height
    if shadow.kind == "drop":
        right, down = (round(v * height) for v in shadow.offset)
        shade = Image.new("L", alpha.size, 0)
        shade.paste(alpha, (right, down))
    else:
        shade = _contact(alpha, box, radius)
    if radius >= 0.5:
        shade = shade.filter(ImageFilter.GaussianBlur(radius))
    return shade.point(lambda v: round(v * shadow.opacity))


def _contact(alpha: Image.Image, box: tuple[int, int, int, int], radius: float) -> Image.Image:
    """The footprint of the product's base, as a thin band centred on its lowest row."""
    left, top, right, bottom = box
    foot = max(1, round(FOOT * (bottom - top)))
    base = np.asarray(alpha.crop((left, bottom - foot, right, bottom)), np.float32)
    footprint = base.max(axis=0)  # (W,): which columns the product stands on, 0..255
    # The band is half above the base (hidden behind the product) and half below it.
    half = max(1, round(radius / 2))
    shade = np.zeros((alpha.height, alpha.width), np.float32)
    rows = slice(max(0, bottom - half), min(alpha.height, bottom + half))
    shade[rows, left:right] = footprint
    return Image.fromarray(np.round(shade).astype(np.uint8), mode="L")
