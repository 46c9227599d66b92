"""The edge a shop publishes: clean-up, full-resolution refinement, colour decontamination.

One function, ``finish_edges``, turns a photo and its probability map into the alpha and the
colours every output is composed from (cutout, mask, solid colour, canvas, the HTTP API):

    prob -> clean_alpha -> guided filter | closed-form matting -> clean_alpha again
         -> foreground colours in the soft band (decontaminate)

Clean-up runs before refinement (the guide and the trimap start from the cleaned mask, so a
dropped fragment cannot come back) and after it (the refined edge is hardened the same way).
Which steps are on by default, and why, is measured in README "Edges".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from clearbg.errors import shown
from clearbg.inference.cleanup import MAX_HOLE, MIN_PART, clean_alpha
from clearbg.inference.guided import guided_filter
from clearbg.inference.matting import foreground, matte, require_pymatting, trimap

__all__ = ["REFINE_MODES", "EdgeOptions", "finish_edges"]

REFINE_MODES = ("off", "guided", "matting")


@dataclass(frozen=True)
class EdgeOptions:
    """How the edge is finished.

    Attributes:
        clean: harden near-certain regions and keep a narrow soft band at the edge
            (``clearbg.inference.cleanup``). On by default: MAE, ghost and halo improved on
            both test splits, and the outline (IoU, boundary F) does not move.
        drop_fragments: with ``clean``, also drop separate parts smaller than ``MIN_PART`` of
            the largest (strangers, smudges). Off by default: it cost IoU on the cars test
            split, whose truth labels small cars in a street scene.
        fill_holes: with ``clean``, also fill enclosed holes smaller than ``MAX_HOLE`` of the
            product. Off by default: it cost a little IoU on the fashion test split.
        refine: ``off``; ``guided`` (guided filter of the map by the photo); ``matting``
            (closed-form alpha matting of a trimap drawn from the mask).
        foreground_threshold, background_threshold, erode_size: the trimap for ``matting``,
            as rembg's ``--alpha-matting-*`` flags (8-bit levels 0..255, and pixels).
        decontaminate: replace the colours of the soft band by the product's own estimated
            colours, so no halo of the old background shows on a new one.

    Raises:
        ValueError: a value out of range (the message names it).
        ImportError: ``matting`` or ``decontaminate`` without PyMatting (the ``matting`` extra).
    """

    clean: bool = True
    drop_fragments: bool = False
    fill_holes: bool = False
    refine: str = "off"
    foreground_threshold: int = 240
    background_threshold: int = 10
    erode_size: int = 10
    decontaminate: bool = False

    def __post_init__(self) -> None:
        if not self.clean and (self.drop_fragments or self.fill_holes):
            step = "drop_fragments" if self.drop_fragments else "fill_holes"
            raise ValueError(f"{step} is a clean-up step: it needs clean on")
        if self.refine not in REFINE_MODES:
            raise ValueError(f"refine must be one of {', '.join(REFINE_MODES)}, got {shown(self.refine)}")
        for name in ("foreground_threshold", "background_threshold"):
            if not 0 <= getattr(self, name) <= 255:
                raise ValueError(f"alpha matting {name.replace('_', ' ')} must be 0..255, got {getattr(self, name)}")
        if self.background_threshold >= self.foreground_threshold:
            raise ValueError(
                f"alpha matting background threshold ({self.background_threshold}) must be below the "
                f"foreground threshold ({self.foreground_threshold})")
        if not 0 <= self.erode_size <= 1000:
            raise ValueError(f"alpha matting erode size must be 0..1000 pixels, got {self.erode_size}")
        if self.refine == "matting":
            require_pymatting("refine=matting")
        if self.decontaminate:
            require_pymatting("decontaminate")

    @property
    def needs_photo(self) -> bool:
        """Whether the photo's pixels (not only the map) shape the result."""
        return self.refine != "off" or self.decontaminate


def finish_edges(image: Image.Image, prob: np.ndarray, options: EdgeOptions = EdgeOptions()
                 ) -> tuple[Image.Image, Image.Image]:
    """The colours and the alpha of the product in ``image``.

    Args:
        image: the photo (RGB, or RGBA whose own alpha ``compose.cutout`` multiplies in).
        prob: its (H, W) foreground probability map, 0..1.
        options: see ``EdgeOptions``.

    Returns:
        ``(colours, alpha)``: ``image`` itself, or with ``decontaminate`` a copy whose soft-band
        colours are the product's; and the 8-bit alpha (mode L).

    Example:
        >>> colours, alpha = finish_edges(photo, prob, EdgeOptions(refine="guided"))  # doctest: +SKIP
    """
    alpha = _clean(prob, options)
    photo = np.asarray(image.convert("RGB"), np.float32) / 255.0 if options.needs_photo else None
    if options.refine != "off":
        alpha = _clean(_refine(photo, alpha, options), options)
    # Quantise once, so the colours are estimated for exactly the alpha that is published.
    alpha8 = np.round(alpha * 255.0).astype(np.uint8)
    colours = image
    if options.decontaminate:
        rgb = foreground(photo, alpha8.astype(np.float32) / 255.0)
        colours = Image.fromarray(np.round(rgb * 255.0).astype(np.uint8), "RGB")
        if image.mode == "RGBA":
            colours.putalpha(image.getchannel("A"))
    return colours, Image.fromarray(alpha8, mode="L")


def _clean(alpha: np.ndarray, options: EdgeOptions) -> np.ndarray:
    if not options.clean:
        return np.asarray(alpha, np.float32)
    return clean_alpha(alpha, min_part=MIN_PART if options.drop_fragments else 0.0,
                       max_hole=MAX_HOLE if options.fill_holes else 0.0)


def _refine(photo: np.ndarray, alpha: np.ndarray, options: EdgeOptions) -> np.ndarray:
    if options.refine == "guided":
        return guided_filter(photo, alpha)
    tri = trimap(alpha, options.foreground_threshold, options.background_threshold, options.erode_size)
    return matte(photo, tri, fallback=alpha)
