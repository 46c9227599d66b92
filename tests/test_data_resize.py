"""Resizing pairs for training keeps photo and mask aligned and masks binary."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clearbg.data.resize import parse_size, resize_pair


def _coded_pair(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A photo that is red exactly where the mask is foreground, green elsewhere."""
    photo = np.zeros((*mask.shape, 3), np.uint8)
    photo[mask >= 128] = (255, 0, 0)
    photo[mask < 128] = (0, 255, 0)
    return photo, mask


@pytest.mark.parametrize("mode", ["pad", "stretch"])
@pytest.mark.parametrize("size", [(64, 64), (96, 48), (200, 300)])
def test_photo_and_mask_stay_aligned(tiny_pairs, mode, size):
    mask = np.asarray(Image.open(tiny_pairs[0]["mask"]).convert("L"))
    photo, mask = resize_pair(*_coded_pair(mask), size, mode=mode, pad_color=(0, 0, 255))
    assert photo.shape == (size[1], size[0], 3) and mask.shape == (size[1], size[0])
    red = (photo[..., 0] > 127) & (photo[..., 1] < 128)
    # Disagreement only along the resampled border, a thin fraction of the pixels.
    assert np.mean(red != (mask == 255)) < 0.01


def test_masks_stay_binary_unless_soft(tiny_pairs):
    mask = np.asarray(Image.open(tiny_pairs[0]["mask"]).convert("L"))
    photo = np.zeros((*mask.shape, 3), np.uint8)
    _, hard = resize_pair(photo, mask, (77, 101))
    _, soft = resize_pair(photo, mask, (77, 101), soft=True)
    assert set(np.unique(hard)) <= {0, 255}
    assert len(np.unique(soft)) > 2
    assert np.array_equal(hard, np.where(soft >= 128, 255, 0))


def test_pad_keeps_aspect_and_centres():
    # A 100x50 all-foreground pair padded into 100x100 fills the middle band only.
    photo, mask = np.full((50, 100, 3), 200, np.uint8), np.full((50, 100), 255, np.uint8)
    p, m = resize_pair(photo, mask, (100, 100), mode="pad", pad_color=(1, 2, 3))
    assert m[:25].max() == 0 and m[75:].max() == 0 and m[25:75].min() == 255
    assert tuple(p[0, 0]) == (1, 2, 3) and tuple(p[50, 50]) == (200, 200, 200)
    _, stretched = resize_pair(photo, mask, (100, 100), mode="stretch")
    assert stretched.min() == 255


def test_size_parsing_and_errors():
    assert parse_size("320") == (320, 320) and parse_size("384x256") == (384, 256)
    for bad in ("", "0", "x", "3x4x5", "-2"):
        with pytest.raises(ValueError, match="320 or 384x256"):
            parse_size(bad)
    with pytest.raises(ValueError, match="differ in size"):
        resize_pair(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), np.uint8), (8, 8))
