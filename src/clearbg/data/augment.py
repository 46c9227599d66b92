"""On-the-fly augmentation of (photo, mask) pairs for training, in numpy and Pillow only.

The seed pipeline's three augmentations that mattered most (cropping, background colour change,
combining images; see ../shared/seeds, the Wehkamp post), plus flips and mild colour jitter:

1. combination, on a canvas at the source resolution (needs a second pair, from ``other``):
   the foreground of another pair, scaled and placed at random, pasted onto this photo through
   its anti-aliased alpha (``p_combine``; mask = union), or two pairs side by side on a fresh
   generated background (``p_side_by_side``; mask = the two masks side by side);
2. geometry, the SAME transform for photo and mask: a random resized crop (float box, one
   Pillow resample for both, so they can never be half a pixel apart), then a horizontal flip;
3. background recolour at the output size: solid colours, studio greys, vertical and radial
   gradients, or a light colour close to the product's own (the light-product case), blended
   through the mask's alpha with an outward-only feather so foreground pixels stay untouched;
4. captions: a line of random text (white, black or a signal colour, often outlined) drawn over
   the photo with the mask unchanged (``p_caption``): listing photos carry dealer captions and
   watermarks, and products carry lettering (police livery, race numbers), so without this a
   fine-tune learns "lettering is product" and cuts out the caption too;
5. photometric jitter (brightness, contrast, saturation), photo only.

Every random draw comes from the ``rng`` passed in, so a (seed, epoch, index) triple gives the
same sample whatever the number of DataLoader workers. Masks stay binary 0/255 unless the input
mask is soft (has grey values), in which case grey values are kept.

Example:
    >>> rng = np.random.default_rng(0)
    >>> photo, mask = augment(photo, mask, rng, AugmentConfig(), (320, 320))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "BG_KINDS",
    "AugmentConfig",
    "augment",
    "color_jitter",
    "crop_resize",
    "draw_caption",
    "feather_alpha",
    "is_soft",
    "make_background",
    "outline",
    "paste_foreground",
    "random_box",
    "recolour_background",
    "side_by_side",
]

# Kinds of generated background, see make_background.
BG_KINDS = ("solid", "grey", "vertical", "radial", "close")

Pair = tuple[np.ndarray, np.ndarray]


def _default_bg_kinds() -> dict[str, float]:
    # Studio greys and product-close colours are what the shop's own photos look like and
    # where models fail (light products on light backgrounds), so they get the larger shares.
    return {"solid": 1.0, "grey": 2.0, "vertical": 1.0, "radial": 1.0, "close": 1.5}


@dataclass
class AugmentConfig:
    """How strongly to augment; defaults are a sensible training setting.

    ``strength`` scales every probability (capped at 1; the flip at 0.5, since always flipping
    is no augmentation) and every magnitude (crop range, aspect range, jitter); 0 turns
    augmentation off, 2 doubles it. It is the one knob for hyperparameter search.
    ``feather``, ``bg_noise``, ``bg_kinds``, ``combine_scale`` and ``caption_height`` are not
    scaled: they set how an augmentation looks, not how often or how much.

    Example:
        >>> AugmentConfig(strength=0.5, p_combine=0.0)
        >>> AugmentConfig.none()   # validation: resize only
    """

    strength: float = 1.0  # scales all probabilities and magnitudes below; 0 = no augmentation
    p_flip: float = 0.5  # horizontal mirror; products look the same mirrored (never flipped upside down)
    p_crop: float = 0.8  # random resized crop, else the whole frame is resized to the output size
    crop_scale: tuple[float, float] = (0.55, 1.0)  # crop area as a fraction of the largest crop of the output's aspect
    crop_aspect: tuple[float, float] = (0.8, 1.25)  # crop aspect / output aspect: stretches the product by up to 25 %
    p_bg_recolour: float = 0.4  # replace the background by a generated one (seed: "background colour change")
    bg_kinds: dict[str, float] = field(default_factory=_default_bg_kinds)  # relative weights of BG_KINDS
    bg_noise: float = 2.0  # std (grey levels) of noise on generated backgrounds, so they are not unnaturally flat
    feather: int = 1  # radius (output pixels) of the outward soft edge where a new background meets the product
    p_combine: float = 0.15  # foreground of another pair pasted onto this photo; mask = union
    combine_scale: tuple[float, float] = (0.5, 1.0)  # size of the pasted pair relative to this photo's frame
    p_side_by_side: float = 0.1  # two pairs side by side on a fresh generated background
    p_caption: float = 0.0  # a line of random text over the photo, mask unchanged (captions, watermarks)
    caption_height: tuple[float, float] = (0.05, 0.15)  # letter height as a fraction of the output height
    p_jitter: float = 0.8  # mild colour jitter (photo only)
    brightness: float = 0.15  # multiply by 1 +- this
    contrast: float = 0.15  # scale the difference to the mean grey by 1 +- this
    saturation: float = 0.2  # scale the difference to the pixel's grey by 1 +- this

    def __post_init__(self) -> None:
        # YAML and JSON give lists: accept them for the range fields.
        for name in ("crop_scale", "crop_aspect", "combine_scale", "caption_height"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ValueError(f"AugmentConfig.{name} must be (low, high) with 0 < low <= high, got {value}")
            setattr(self, name, value)
        if self.crop_scale[1] > 1 or self.combine_scale[1] > 1 or self.caption_height[1] > 1:
            raise ValueError(
                "AugmentConfig.crop_scale, combine_scale and caption_height must not exceed 1 (a fraction of the frame)"
            )
        if self.strength < 0:
            raise ValueError(f"AugmentConfig.strength must be >= 0, got {self.strength}")
        for name in ("p_flip", "p_crop", "p_bg_recolour", "p_combine", "p_side_by_side", "p_caption", "p_jitter"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        unknown = set(self.bg_kinds) - set(BG_KINDS)
        if unknown or not self.bg_kinds or min(self.bg_kinds.values()) < 0 or sum(self.bg_kinds.values()) <= 0:
            raise ValueError(
                f"AugmentConfig.bg_kinds must map some of {', '.join(BG_KINDS)} to weights >= 0 "
                f"(not all 0), got {self.bg_kinds}"
            )
        if self.feather < 0 or self.bg_noise < 0:
            raise ValueError("AugmentConfig.feather and bg_noise must be >= 0")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation (validation, evaluation): the frame is only resized to the output size."""
        return cls(strength=0.0)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AugmentConfig:
        """Build from a plain dict (YAML, JSON, MLflow params), naming unknown keys.

        Raises:
            ValueError: An unknown key or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown augmentation setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for logging and checkpoints); ``from_dict`` reads it back."""
        return dataclasses.asdict(self)

    # Effective values after ``strength``.
    def _p(self, p: float) -> float:
        return min(1.0, p * self.strength)

    def _range(self, low_high: tuple[float, float], neutral: float, log: bool = False) -> tuple[float, float]:
        """Shrink a range towards ``neutral`` (strength < 1) or widen it (> 1)."""
        s = self.strength
        if log:
            lo, hi = (math.exp(math.log(v) * s) for v in low_high)
            return lo, hi
        lo, hi = (neutral + (v - neutral) * s for v in low_high)
        return max(lo, 0.05), max(min(hi, 1.0), max(lo, 0.05))


def is_soft(mask: np.ndarray) -> bool:
    """True if ``mask`` has grey values (anything other than 0 and 255)."""
    return bool(np.any((mask != 0) & (mask != 255)))


# --------------------------------------------------------------------------- the pipeline


def augment(
    photo: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig,
    size: tuple[int, int],
    other: Callable[[], Pair] | None = None,
) -> Pair:
    """One augmented (photo, mask) pair at ``size``.

    Args:
        photo: HxWx3 uint8 RGB.
        mask: HxW uint8, 0 = background, 255 = foreground (grey values allowed: soft mask).
        rng: the only source of randomness; the same generator state gives the same result.
        config: what to apply and how strongly; ``AugmentConfig.none()`` only resizes.
        size: output (width, height).
        other: returns a second (photo, mask) pair (any size) for combining; called at most
            once, and only when a combination is drawn. Without it no combination happens.

    Returns:
        (photo HxWx3 uint8, mask HxW uint8) with (W, H) = ``size``; the mask is 0/255 unless a
        soft mask went in.

    Raises:
        ValueError: photo and mask do not have matching shapes and dtypes.

    Example:
        >>> p, m = augment(photo, mask, np.random.default_rng([0, epoch, i]), AugmentConfig(), (320, 320))
    """
    _check_pair(photo, mask, "photo/mask")
    out_w, out_h = int(size[0]), int(size[1])
    soft = is_soft(mask)
    fresh_background = False

    # 1. Combination on a canvas at source resolution. Both draws happen with or without
    # ``other``, so whether a partner exists does not change the rest of the sample.
    u_side, u_combine = rng.random(), rng.random()
    if other is not None:
        if u_side < config._p(config.p_side_by_side):
            photo2, mask2 = other()
            _check_pair(photo2, mask2, "other photo/mask")
            soft = soft or is_soft(mask2)
            photo, mask = side_by_side(photo, mask, photo2, mask2, out_w / out_h, swap=bool(rng.random() < 0.5))
            fresh_background = True  # the two old backgrounds and the padding do not match
        elif u_combine < config._p(config.p_combine):
            photo2, mask2 = other()
            _check_pair(photo2, mask2, "other photo/mask")
            soft = soft or is_soft(mask2)
            photo, mask = _random_paste(photo, mask, photo2, mask2, rng, config, soft)

    # 2. Geometry: one float box, one resample for both, then the flip.
    height, width = mask.shape
    if rng.random() < config._p(config.p_crop):
        box = random_box(
            rng, width, height, out_w / out_h,
            scale=config._range(config.crop_scale, neutral=1.0),
            aspect=config._range(config.crop_aspect, neutral=1.0, log=True),
        )
    else:
        box = (0.0, 0.0, float(width), float(height))
    photo, mask = crop_resize(photo, mask, box, (out_w, out_h), soft=soft)
    if rng.random() < min(0.5, config.p_flip * config.strength):
        photo, mask = photo[:, ::-1], mask[:, ::-1]

    # 3. Background recolour at output size (cheaper, and the feather is in output pixels).
    if fresh_background or rng.random() < config._p(config.p_bg_recolour):
        kind = _choose_kind(rng, config.bg_kinds)
        photo = recolour_background(photo, mask, rng, kind, noise=config.bg_noise, feather=config.feather)

    # 4. Captions: drawn after the geometry so their letters keep their shapes. No draw when
    # off, so runs from before this option replay the same samples.
    if config.p_caption > 0 and rng.random() < config._p(config.p_caption):
        photo = draw_caption(photo, rng, config.caption_height)

    # 5. Photometric, photo only.
    if rng.random() < config._p(config.p_jitter):
        s = config.strength
        photo = color_jitter(
            photo,
            brightness=1 + rng.uniform(-1, 1) * config.brightness * s,
            contrast=1 + rng.uniform(-1, 1) * config.contrast * s,
            saturation=1 + rng.uniform(-1, 1) * config.saturation * s,
        )
    return np.ascontiguousarray(photo), np.ascontiguousarray(mask)


def _check_pair(photo: np.ndarray, mask: np.ndarray, what: str) -> None:
    if photo.dtype != np.uint8 or mask.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 arrays, got {photo.dtype} and {mask.dtype}")
    if photo.ndim != 3 or photo.shape[2] != 3 or mask.shape != photo.shape[:2]:
        raise ValueError(f"{what}: expected HxWx3 photo and HxW mask of the same size, got {photo.shape} and {mask.shape}")


def _choose_kind(rng: np.random.Generator, weights: dict[str, float]) -> str:
    kinds = [k for k in BG_KINDS if weights.get(k, 0) > 0]
    p = np.array([weights[k] for k in kinds], dtype=np.float64)
    return kinds[int(rng.choice(len(kinds), p=p / p.sum()))]


# --------------------------------------------------------------------------- captions

_CAPTION_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789?!#$%&+-"
# White and black dominate real captions and watermarks; a few signal colours for sale stickers.
_CAPTION_COLOURS = ((255, 255, 255), (0, 0, 0), (255, 214, 0), (220, 30, 30), (30, 90, 220))
_CAPTION_COLOUR_WEIGHTS = np.array([4.0, 3.0, 1.0, 1.0, 1.0]) / 10.0


def draw_caption(photo: np.ndarray, rng: np.random.Generator, height: tuple[float, float] = (0.05, 0.15)) -> np.ndarray:
    """``photo`` with one line of random text drawn over it (the mask is not touched).

    Random words of 2-9 characters, letter height a fraction ``height`` of the photo's, one
    colour (white or black mostly), half the time outlined in black or white as captions are,
    placed at random (it may run off the frame). Pillow's built-in font, so nothing to install.

    Example:
        >>> photo = draw_caption(photo, np.random.default_rng(0))
    """
    out = Image.fromarray(photo)
    h, w = photo.shape[:2]
    size = max(6, round(h * rng.uniform(*height)))
    words = [
        "".join(rng.choice(list(_CAPTION_ALPHABET), size=int(rng.integers(2, 10))))
        for _ in range(int(rng.integers(1, 4)))
    ]
    colour = _CAPTION_COLOURS[int(rng.choice(len(_CAPTION_COLOURS), p=_CAPTION_COLOUR_WEIGHTS))]
    stroke = max(1, size // 12) if rng.random() < 0.5 else 0
    stroke_colour = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    xy = (float(rng.uniform(-0.1, 0.8) * w), float(rng.uniform(0, 1) * h - size / 2))
    ImageDraw.Draw(out).text(
        xy, " ".join(words), fill=colour, font=ImageFont.load_default(size=size),
        stroke_width=stroke, stroke_fill=stroke_colour,
    )
    return np.asarray(out)


# --------------------------------------------------------------------------- geometry


def random_box(
    rng: np.random.Generator,
    width: int,
    height: int,
    out_aspect: float,
    scale: tuple[float, float],
    aspect: tuple[float, float],
) -> tuple[float, float, float, float]:
    """A random crop box (x0, y0, x1, y1) in float pixel-edge coordinates inside the frame.

    The box's area is ``scale`` (a fraction) of the largest box of aspect ``out_aspect * r``
    that fits, with ``r`` log-uniform in ``aspect``; resized to the output it stretches the
    content by ``r``.
    """
    s = rng.uniform(*scale)
    r = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
    q = out_aspect * r
    if width / height > q:
        bh, bw = float(height), height * q
    else:
        bw, bh = float(width), width / q
    bw, bh = bw * math.sqrt(s), bh * math.sqrt(s)
    x0 = rng.uniform(0, width - bw)
    y0 = rng.uniform(0, height - bh)
    return (x0, y0, min(x0 + bw, float(width)), min(y0 + bh, float(height)))


def crop_resize(
    photo: np.ndarray, mask: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int], soft: bool = False
) -> Pair:
    """Crop ``box`` (float, pixel edges) and resize to ``size`` (W, H), photo and mask alike.

    Both go through the same Pillow bilinear resample (antialiased when shrinking), so their
    geometry is identical to the sub-pixel; the mask is then thresholded at half unless
    ``soft``. Nearest-neighbour on the mask would round differently from the photo's filter.

    Example:
        >>> p, m = crop_resize(photo, mask, (0, 0, photo.shape[1], photo.shape[0]), (320, 320))
    """
    size = (int(size[0]), int(size[1]))
    out_photo = np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BILINEAR, box=box))
    out_mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.BILINEAR, box=box))
    if not soft:
        out_mask = np.where(out_mask >= 128, np.uint8(255), np.uint8(0))
    return out_photo, out_mask


def _resize_pair(photo: np.ndarray, mask: np.ndarray, size: tuple[int, int], soft: bool) -> Pair:
    height, width = mask.shape
    if (width, height) == tuple(size):
        return photo, mask
    return crop_resize(photo, mask, (0.0, 0.0, float(width), float(height)), size, soft=soft)


# --------------------------------------------------------------------------- combination


def paste_foreground(
    photo: np.ndarray, mask: np.ndarray, fg_photo: np.ndarray, fg_alpha: np.ndarray,
    offset: tuple[int, int] = (0, 0), soft: bool = False,
) -> Pair:
    """Paste the foreground of (fg_photo, fg_alpha) onto ``photo`` with its top-left at ``offset``.

    The result is ``fg_photo * a + photo * (1 - a)`` with ``a = fg_alpha / 255``: exactly the
    pasted photo where ``fg_alpha`` is 255, the base photo untouched where it is 0, a mix on
    grey (anti-aliased) edges. The mask is the union of the base mask and the pasted one
    (thresholded at half unless ``soft``), so the label boundary sits where the mix is half
    and half: no bias towards either side.

    Args:
        photo, mask: the base pair (HxWx3, HxW uint8).
        fg_photo, fg_alpha: the pair whose foreground is pasted (alpha may have grey edges, e.g.
            a bilinearly resized binary mask); must fit inside at ``offset``.
        offset: (x, y) of the pasted pair's top-left corner.
        soft: keep grey values in the output mask (soft-mask datasets).

    Returns:
        The new (photo, mask), same size as the base.

    Example:
        >>> p, m = paste_foreground(photo, mask, other_photo, other_mask)  # same size, in place
    """
    x, y = int(offset[0]), int(offset[1])
    h, w = fg_alpha.shape
    if x < 0 or y < 0 or y + h > mask.shape[0] or x + w > mask.shape[1]:
        raise ValueError(f"pasted pair {w}x{h} at {offset} does not fit in {mask.shape[1]}x{mask.shape[0]}")
    alpha = fg_alpha.astype(np.float32)[..., None] / np.float32(255)
    out_photo = photo.copy()
    out_mask = mask.copy()
    region = out_photo[y : y + h, x : x + w]
    blended = fg_photo.astype(np.float32) * alpha + region.astype(np.float32) * (1 - alpha)
    out_photo[y : y + h, x : x + w] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    label = fg_alpha if soft else np.where(fg_alpha >= 128, np.uint8(255), np.uint8(0))
    out_mask[y : y + h, x : x + w] = np.maximum(out_mask[y : y + h, x : x + w], label)
    return out_photo, out_mask


def _random_paste(
    photo: np.ndarray, mask: np.ndarray, photo2: np.ndarray, mask2: np.ndarray,
    rng: np.random.Generator, config: AugmentConfig, soft: bool,
) -> Pair:
    """The other pair, scaled into this frame by a random factor, pasted at a random place."""
    height, width = mask.shape
    k = rng.uniform(*config.combine_scale)
    w2, h2 = max(1, round(width * k)), max(1, round(height * k))
    if mask2.shape != (h2, w2):
        # Resized as one RGBA image: Pillow resamples it with premultiplied alpha, so the edge
        # colour is the product's own (none of its old background leaks in), and the alpha gets
        # a grey, anti-aliased edge that paste_foreground mixes with and thresholds for the label.
        rgba = Image.fromarray(np.dstack([photo2, mask2]), "RGBA").resize((w2, h2), Image.Resampling.BILINEAR)
        rgba = np.asarray(rgba)
        photo2, mask2 = rgba[..., :3], rgba[..., 3]
    alpha2 = mask2
    offset = (int(rng.integers(0, width - w2 + 1)), int(rng.integers(0, height - h2 + 1)))
    return paste_foreground(photo, mask, photo2, alpha2, offset, soft=soft)


def side_by_side(
    photo: np.ndarray, mask: np.ndarray, photo2: np.ndarray, mask2: np.ndarray, out_aspect: float, swap: bool = False
) -> Pair:
    """Two pairs next to each other (the second scaled to the first's height), padded to ``out_aspect``.

    The padding repeats the edge pixels and is background in the mask; the caller is expected
    to replace the whole background afterwards (``augment`` does), since the two original
    backgrounds do not match.

    Returns:
        (photo, mask) of the canvas; mask = the two masks placed side by side.
    """
    height = mask.shape[0]
    w2 = max(1, round(mask2.shape[1] * height / mask2.shape[0]))
    photo2, mask2 = _resize_pair(photo2, mask2, (w2, height), is_soft(mask2))
    left, right = ((photo2, mask2), (photo, mask)) if swap else ((photo, mask), (photo2, mask2))
    canvas = np.concatenate([left[0], right[0]], axis=1)
    canvas_mask = np.concatenate([left[1], right[1]], axis=1)
    height, width = canvas_mask.shape
    if width / height > out_aspect:  # too wide: pad top and bottom
        extra = round(width / out_aspect) - height
        pad = ((extra // 2, extra - extra // 2), (0, 0))
    else:
        extra = round(height * out_aspect) - width
        pad = ((0, 0), (extra // 2, extra - extra // 2))
    canvas = np.pad(canvas, (*pad, (0, 0)), mode="edge")
    canvas_mask = np.pad(canvas_mask, pad, mode="constant")
    return canvas, canvas_mask


# --------------------------------------------------------------------------- background recolour


def feather_alpha(mask: np.ndarray, radius: int, inward: bool = False) -> np.ndarray:
    """float32 alpha in [0, 1] from a mask, softened on one side of the edge only.

    Outward (default, for background recolour): inside the mask alpha stays exactly
    mask / 255, so foreground pixels never change; just outside, a box blur of radius
    ``radius`` lets the old pixels fade into the new ones instead of a hard, aliased seam.
    Inward (for pasting a foreground): outside the mask alpha is exactly 0, so no pixel of
    the pasted pair's own background comes along; its outermost foreground pixels are mixed
    with what lies beneath, like the anti-aliased edge of a real photo (still mostly
    foreground, so labelling them foreground stays right).
    """
    alpha = mask.astype(np.float32) / np.float32(255)  # division: 255 / 255 is exactly 1
    if radius <= 0:
        return alpha
    blurred = _box_blur(alpha, radius)
    return np.minimum(alpha, blurred) if inward else np.maximum(alpha, blurred)


def _box_blur(values: np.ndarray, radius: int) -> np.ndarray:
    """Separable (2r+1)^2 box blur with edge padding, as sums of shifted slices.

    (Not cumulative sums: those leave float noise, e.g. 1e-7 far from any edge or 1 + 1e-7
    inside, and the feather must be exactly 0 and 1 there.)
    """
    k = 2 * radius + 1
    height, width = values.shape
    padded = np.pad(values, radius, mode="edge")
    rows = sum(padded[:, i : i + width] for i in range(k))
    out = sum(rows[i : i + height] for i in range(k))
    return np.clip(out / np.float32(k * k), 0, 1)


def make_background(
    kind: str, size: tuple[int, int], rng: np.random.Generator, fg_colour: np.ndarray | None = None
) -> np.ndarray:
    """A generated background, float32 HxWx3 in 0..255 (before noise).

    Kinds:
        solid: one random colour.
        grey: a studio grey, mostly light (white sweep down to mid grey), faintly tinted.
        vertical: a gradient from top to bottom between two related colours (a studio sweep).
        radial: a light centre darkening towards the corners (a spot-lit backdrop).
        close: a light colour close to the product's own (``fg_colour``): the low-contrast case
            the seed pipeline clustered separately; falls back to grey without ``fg_colour``.
    """
    width, height = int(size[0]), int(size[1])
    if kind == "solid":
        colour = rng.uniform(0, 255, 3)
        return np.broadcast_to(colour.astype(np.float32), (height, width, 3))
    if kind == "grey" or (kind == "close" and fg_colour is None):
        level = 255 - 135 * rng.random() ** 2
        colour = np.clip(level + rng.normal(0, 2, 3), 0, 255)
        return np.broadcast_to(colour.astype(np.float32), (height, width, 3))
    if kind == "close":
        colour = np.asarray(fg_colour, dtype=np.float64) + rng.normal(0, 12, 3)
        colour = colour + (255 - colour) * rng.uniform(0, 0.35)  # lighter, like a white-ish backdrop
        colour = np.clip(colour, 0, 255)
        return np.broadcast_to(colour.astype(np.float32), (height, width, 3))
    if kind == "vertical":
        top = rng.uniform(0, 255, 3)
        bottom = np.clip(top + rng.normal(0, 50, 3), 0, 255)
        t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
        return np.broadcast_to(top.astype(np.float32) * (1 - t) + bottom.astype(np.float32) * t, (height, width, 3))
    if kind == "radial":
        centre_colour = np.clip(rng.uniform(150, 255) + rng.normal(0, 15, 3), 0, 255).astype(np.float32)
        edge_colour = centre_colour * np.float32(rng.uniform(0.55, 0.9))
        cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.25, 0.6) * height
        yy, xx = np.ogrid[:height, :width]
        r = np.sqrt(((xx - cx) / width) ** 2 + ((yy - cy) / height) ** 2).astype(np.float32)
        t = np.clip(r / np.float32(0.75), 0, 1)[..., None]
        return centre_colour * (1 - t) + edge_colour * t
    raise ValueError(f"unknown background kind {kind!r}; use one of {', '.join(BG_KINDS)}")


def recolour_background(
    photo: np.ndarray, mask: np.ndarray, rng: np.random.Generator, kind: str, noise: float = 2.0, feather: int = 1
) -> np.ndarray:
    """Replace the background of ``photo`` by a generated one, through the mask's alpha.

    Foreground pixels (mask 255) are returned unchanged; background pixels get the new
    background, with ``feather`` pixels of soft transition just outside the foreground.

    Args:
        photo: HxWx3 uint8; mask: HxW uint8.
        rng: randomness for the colours and the noise.
        kind: one of ``BG_KINDS``.
        noise: std of Gaussian noise added to the background (grey levels).
        feather: outward soft-edge radius in pixels.

    Returns:
        The new photo, HxWx3 uint8.
    """
    height, width = mask.shape
    alpha = feather_alpha(mask, feather)
    fg_colour = None
    if kind == "close":
        weight = float(alpha.sum())
        if weight > 0:
            fg_colour = (alpha.reshape(1, -1) @ photo.reshape(-1, 3).astype(np.float32))[0] / weight
    background = make_background(kind, (width, height), rng, fg_colour)
    if noise > 0:
        # One noise plane for all channels (luminance-like grain): a third of the cost of RGB noise.
        background = background + rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(noise)
    out = photo.astype(np.float32)
    out -= background
    out *= alpha[..., None]
    out += background  # = photo * a + background * (1 - a)
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    # Exactly the old pixels where alpha is 1 (float rounding could otherwise move them by 1).
    return np.where(alpha[..., None] >= 1, photo, out.astype(np.uint8))


# --------------------------------------------------------------------------- photometric


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def color_jitter(photo: np.ndarray, brightness: float = 1.0, contrast: float = 1.0, saturation: float = 1.0) -> np.ndarray:
    """Scale brightness, contrast and saturation by the given factors (1 = unchanged).

    Returns:
        HxWx3 uint8.
    """
    x = photo.astype(np.float32)
    if brightness != 1:
        x *= np.float32(brightness)
    if contrast != 1:
        mean = np.float32((x @ _LUMA).mean())
        x = (x - mean) * np.float32(contrast) + mean
    if saturation != 1:
        grey = (x @ _LUMA)[..., None]
        x = grey + (x - grey) * np.float32(saturation)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- preview


def outline(photo: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (255, 0, 255)) -> np.ndarray:
    """The photo with the mask's boundary drawn on it (2 px: the last pixel inside, the first outside).

    Used by ``clearbg augment-preview`` to check alignment by eye.
    """
    fg = mask >= 128
    edge = np.zeros_like(fg)
    edge[:, 1:] |= fg[:, 1:] != fg[:, :-1]
    edge[:, :-1] |= fg[:, 1:] != fg[:, :-1]
    edge[1:, :] |= fg[1:, :] != fg[:-1, :]
    edge[:-1, :] |= fg[1:, :] != fg[:-1, :]
    out = photo.copy()
    out[edge] = colour
    return out
