"""Resize a (photo, mask) pair to a training size, keeping the two aligned pixel for pixel."""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

from clearbg.models.preprocess import Preprocess

__all__ = ["RESIZE_MODES", "parse_size", "resize_pair"]

RESIZE_MODES = ("pad", "stretch")
PHOTO_INTERPOLATION = "bilinear"  # the models' (Preprocess); Pillow's bilinear antialiases when shrinking
ResizeMode = Literal["pad", "stretch"]


def parse_size(text: str) -> tuple[int, int]:
    """``"320"`` -> ``(320, 320)``; ``"384x256"`` -> ``(384, 256)`` (width x height).

    Raises:
        ValueError: Not one or two positive integers.
    """
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values, default=0) < 1:
        raise ValueError(f"size must look like 320 or 384x256 (width x height), got {text!r}")
    return (values[0], values[-1])


def resize_pair(
    photo: np.ndarray,
    mask: np.ndarray,
    size: tuple[int, int],
    *,
    mode: ResizeMode = "stretch",
    pad_color: tuple[int, int, int] = (255, 255, 255),
    soft: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``photo`` (HxWx3 uint8) and ``mask`` (HxW uint8) to ``size`` = (width, height).

    ``pad`` keeps the aspect ratio: the pair is scaled to fit and centred, the photo padded
    with ``pad_color`` and the mask with background (0). ``stretch`` scales each axis alone.
    The mask is resampled smoothly (area-weighted when shrinking) and, unless ``soft``,
    thresholded at half: edges land where the coverage crosses 50 %, which is more exact
    than nearest-neighbour, and no grey values are invented.

    Returns:
        ``(photo, mask)`` as uint8 arrays of shape (height, width, 3) and (height, width).

    Example:
        >>> photo, mask = np.zeros((80, 40, 3), np.uint8), np.full((80, 40), 255, np.uint8)
        >>> p, m = resize_pair(photo, mask, (32, 32))
        >>> p.shape, m.shape, int(m[:, 0].max()), int(m[:, 16].min())
        ((32, 32, 3), (32, 32), 0, 255)
    """
    if photo.shape[:2] != mask.shape[:2]:
        raise ValueError(f"photo {photo.shape[1]}x{photo.shape[0]} and mask {mask.shape[1]}x{mask.shape[0]} differ in size")
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    width, height = size
    src_h, src_w = mask.shape
    if mode == "stretch":
        box = (0, 0, width, height)
    else:
        scale = min(width / src_w, height / src_h)
        new_w, new_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
        left, top = (width - new_w) // 2, (height - new_h) // 2
        box = (left, top, left + new_w, top + new_h)
    inner = (box[2] - box[0], box[3] - box[1])

    # The photo is resized exactly as the predictor resizes it (the models' preprocessing), so a
    # model trained on these pairs sees at training what it sees in use.
    photo_img = Preprocess(interpolation=PHOTO_INTERPOLATION).resize_image(Image.fromarray(photo, "RGB"), inner)
    mask_img = Image.fromarray(mask, "L").resize(inner, Image.Resampling.BILINEAR)
    if inner != (width, height):
        canvas = Image.new("RGB", (width, height), pad_color)
        canvas.paste(photo_img, box[:2])
        photo_img = canvas
        mask_canvas = Image.new("L", (width, height), 0)
        mask_canvas.paste(mask_img, box[:2])
        mask_img = mask_canvas
    out_mask = np.asarray(mask_img)
    if not soft:
        out_mask = np.where(out_mask >= 128, 255, 0).astype(np.uint8)
    return np.asarray(photo_img), out_mask
