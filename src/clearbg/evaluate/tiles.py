"""Thumbnail tiles of the report's worst-case grids: photo, truth, prediction, error overlay.

Example:
    >>> tiles = CaseTiles("ccp_0001", [evaluation])  # doctest: +SKIP
    >>> prob, errors = tiles.prediction_tiles(evaluation)  # doctest: +SKIP
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from clearbg.errors import ClearbgError
from clearbg.evaluate.charts import data_uri
from clearbg.evaluate.run import GROUP_COLUMN, Evaluation, load_pair, thumbnail_size
from clearbg.imageio import flatten

__all__ = ["FALSE_NEGATIVE", "FALSE_POSITIVE", "CaseTiles", "error_overlay"]

FALSE_POSITIVE = (226, 38, 38)  # kept but background: red
FALSE_NEGATIVE = (32, 96, 236)  # product but dropped: blue


def _encode(image: Image.Image, fmt: str = "JPEG") -> str:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=85, optimize=True)
        return data_uri(buffer.getvalue(), "image/jpeg")
    image.save(buffer, format="PNG", optimize=True)
    return data_uri(buffer.getvalue(), "image/png")


def _placeholder(size: tuple[int, int], text: str) -> Image.Image:
    tile = Image.new("RGB", size, (236, 236, 236))
    draw = ImageDraw.Draw(tile)
    for line_no, line in enumerate(text.split("\n")):
        draw.text((6, 6 + 12 * line_no), line, fill=(110, 110, 110))
    return tile


def error_overlay(photo: Image.Image, truth: np.ndarray, pred: np.ndarray) -> Image.Image:
    """The photo faded to grey, the kept product in colour, extra pixels red, missed pixels blue.

    Args:
        photo: RGB thumbnail.
        truth, pred: (h, w) bool masks of the thumbnail's size.

    Example:
        >>> tile = error_overlay(Image.new("RGB", (2, 1)), np.array([[True, False]]), np.array([[False, True]]))
        >>> tile.getpixel((0, 0)) != tile.getpixel((1, 0))
        True
    """
    rgb = np.asarray(photo.convert("RGB"), dtype=np.float32)
    grey = rgb.mean(axis=2, keepdims=True)
    out = np.repeat(255 - (255 - grey) * 0.35, 3, axis=2)  # background: faded grey
    kept = truth & pred
    out[kept] = rgb[kept]
    for where, colour in ((pred & ~truth, FALSE_POSITIVE), (truth & ~pred, FALSE_NEGATIVE)):
        out[where] = 0.2 * out[where] + 0.8 * np.array(colour, dtype=np.float32)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


class CaseTiles:
    """Thumbnails of one image for the worst-case grids: photo, truth, each model's prediction."""

    def __init__(self, image_id: str, evaluations: list[Evaluation]) -> None:
        from clearbg.data.clean import CleanOptions

        first = evaluations[0]
        row = first.per_image.loc[first.per_image["id"] == image_id].iloc[0]
        self.id, self.group = image_id, str(row[GROUP_COLUMN])
        pred = next((e.thumbnails[image_id] for e in evaluations if image_id in e.thumbnails), None)
        size = (pred.shape[1], pred.shape[0]) if pred is not None else (128, 192)
        self.photo: Image.Image | None = None
        self.truth: np.ndarray | None = None
        self.problem = ""
        try:
            options = CleanOptions(**first.settings.get("mask_options", {}))
            photo, truth = load_pair(str(row["image"]), str(row["mask"]), options)
        except ClearbgError as err:
            self.problem = str(err)
        else:
            size = thumbnail_size(photo.width, photo.height)
            # Transparent photos on white, as the model saw them.
            self.photo = flatten(photo).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            small = Image.fromarray(truth.view(np.uint8) * np.uint8(255)).resize(size, Image.Resampling.BILINEAR)
            self.truth = np.asarray(small) >= 128
        self.size = size

    def photo_tile(self) -> str:
        if self.photo is None:
            return _encode(_placeholder(self.size, "photo not\nreachable"))
        return _encode(self.photo)

    def truth_tile(self) -> str:
        if self.truth is None:
            return _encode(_placeholder(self.size, "mask not\nreachable"))
        return _encode(Image.fromarray(self.truth.view(np.uint8) * np.uint8(255)), "PNG")

    def prediction_tiles(self, evaluation: Evaluation) -> tuple[str, str]:
        """(probability map, error overlay) of one model."""
        thumb = evaluation.thumbnails.get(self.id)
        if thumb is None:
            tile = _encode(_placeholder(self.size, "thumbnail\nnot kept"))
            return tile, tile
        prob = Image.fromarray(thumb)
        if prob.size != self.size:
            prob = prob.resize(self.size, Image.Resampling.BILINEAR)
        if self.photo is None or self.truth is None:
            return _encode(prob, "PNG"), _encode(_placeholder(self.size, "no truth"))
        cut = 255 * float(evaluation.settings.get("threshold", 0.5))
        return _encode(prob, "PNG"), _encode(error_overlay(self.photo, self.truth, np.asarray(prob) > cut))
