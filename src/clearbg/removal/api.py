"""The library's front door: ``remove()`` for one photo, ``Remover`` for many.

``remove`` returns the kind it was given: bytes -> encoded bytes, PIL image -> PIL image,
ndarray -> ndarray, path -> PIL image (or the written path when ``out`` is given).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from clearbg import imageio
from clearbg.removal.pipeline import output_size
from clearbg.inference.compose import Canvas, Color, OutputOptions, compose, parse_color
from clearbg.inference.edges import EdgeOptions
from clearbg.inference.shadow import Shadow
from clearbg.inference.predictor import Predictor
from clearbg.models.specs import DEFAULT_MODEL

ImageLike = str | Path | bytes | Image.Image | np.ndarray


class Remover:
    """A model loaded once, removing backgrounds from many photos in batches.

    Args:
        model: registry name (``u2netp`` default, ``u2net``) or a checkpoint path.
        device, precision, batch_size, tta: see ``Predictor``.
        max_pixels: refuse photos larger than this (default ``CLEARBG_MAX_PIXELS`` or 100 MP).

    Example:
        >>> remover = Remover("u2netp")                                    # doctest: +SKIP
        >>> cutouts = remover.remove_many(["a.jpg", "b.jpg"])              # doctest: +SKIP
        >>> remover.remove("a.jpg", bg_color="#ffffff").save("a_white.jpg")  # doctest: +SKIP
        >>> remover.remove("a.jpg", refine="matting", decontaminate=True, shadow="contact",
        ...                canvas="1000x1000", bg_color="white")                 # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        *,
        device: str | None = None,
        precision: str = "auto",
        batch_size: int | None = None,
        max_pixels: int | None = None,
        tta: bool = False,
    ):
        self.predictor = Predictor(model, device=device, precision=precision, batch_size=batch_size, tta=tta)
        self.max_pixels = max_pixels

    def remove(self, image: ImageLike, **options: Any):
        """Remove the background of one photo; see ``remove`` for the options."""
        return self.remove_many([image], **options)[0]

    def remove_many(
        self,
        images: Sequence[ImageLike],
        *,
        format: str = "png",
        quality: int = 95,
        out: str | Path | Sequence[str | Path] | None = None,
        **options: Any,
    ) -> list:
        """Remove backgrounds of several photos in one batch; results in input order.

        ``options`` are ``make_options``'s (mask_only, bg_color, canvas, clean, refine, ...).
        """
        options = make_options(**options)
        outs = [out] if isinstance(out, (str, Path)) else list(out or [None] * len(images))
        if self.predictor.device_type == "cpu":
            # One photo per core, every stage: decode, network, compose, encode.
            def one(job):
                source, target = job
                image = self._check_encodable(self._decode(source), source, options, format, target)
                result = compose(image, self.predictor.predict_one(image), options)
                return _as_input_kind(source, result, format, quality, target)

            return self.predictor.map(one, list(zip(images, outs)))
        decoded = [self._check_encodable(self._decode(image), image, options, format, target)
                   for image, target in zip(images, outs)]
        results = [compose(im, prob, options) for im, prob in zip(decoded, self.predictor.predict(decoded))]
        return [
            _as_input_kind(source, result, format, quality, target)
            for source, result, target in zip(images, results, outs)
        ]

    @staticmethod
    def _check_encodable(image: Image.Image, source: ImageLike, options: OutputOptions, fmt: str,
                         out: str | Path | None) -> Image.Image:
        """Refuse before the model runs a result that its output format cannot store."""
        if out is not None:
            fmt = Path(out).suffix or fmt
        elif not isinstance(source, (bytes, bytearray, memoryview)):
            return image  # returned as pixels: nothing is encoded
        name = str(out or "<bytes>")
        imageio.check_encodable(output_size(image, options), fmt, name)
        return image

    def _decode(self, image: ImageLike) -> Image.Image:
        if isinstance(image, np.ndarray):
            image = _from_array(image)
        if isinstance(image, Image.Image):
            return imageio.normalise(image)
        return imageio.open_image(image, max_pixels=self.max_pixels)


def make_options(
    *,
    mask_only: bool = False,
    bg_color: str | Color | None = None,
    canvas: str | Canvas | None = None,
    clean: bool = True,
    drop_fragments: bool = False,
    fill_holes: bool = False,
    refine: str = "off",
    alpha_matting_foreground_threshold: int = 240,
    alpha_matting_background_threshold: int = 10,
    alpha_matting_erode_size: int = 10,
    decontaminate: bool = False,
    shadow: str | Shadow | None = None,
) -> OutputOptions:
    """Build ``OutputOptions`` from user-facing values (hex colours, ``"1000x1000"``, ``"drop"``).

    The edge options are ``EdgeOptions``'s, the trimap's under rembg's names; ``shadow`` is a
    kind (``"contact"``, ``"drop"``) with default parameters or a ``Shadow``.

    Raises:
        ValueError: a value we do not accept (the message names it).
        ImportError: ``refine="matting"`` or ``decontaminate`` without the ``matting`` extra.
    """
    color = parse_color(bg_color) if isinstance(bg_color, str) else bg_color
    shop = Canvas.parse(canvas) if isinstance(canvas, str) else canvas
    edges = EdgeOptions(clean=clean, drop_fragments=drop_fragments, fill_holes=fill_holes, refine=refine, foreground_threshold=alpha_matting_foreground_threshold,
                        background_threshold=alpha_matting_background_threshold,
                        erode_size=alpha_matting_erode_size, decontaminate=decontaminate)
    cast = Shadow(shadow) if isinstance(shadow, str) else shadow
    return OutputOptions(mask_only=mask_only, bg_color=color, canvas=shop, edges=edges, shadow=cast)


@functools.lru_cache(maxsize=4)
def _shared_remover(model: str, precision: str) -> Remover:
    return Remover(model, precision=precision)


def remove(
    image: ImageLike,
    *,
    model: str = DEFAULT_MODEL,
    mask_only: bool = False,
    bg_color: str | Color | None = None,
    canvas: str | Canvas | None = None,
    clean: bool = True,
    drop_fragments: bool = False,
    fill_holes: bool = False,
    refine: str = "off",
    alpha_matting_foreground_threshold: int = 240,
    alpha_matting_background_threshold: int = 10,
    alpha_matting_erode_size: int = 10,
    decontaminate: bool = False,
    shadow: str | Shadow | None = None,
    format: str = "png",
    quality: int = 95,
    out: str | Path | None = None,
    precision: str = "auto",
    remover: Remover | None = None,
):
    """Remove the background of one photo.

    Args:
        image: a path, encoded bytes, a PIL image or an ndarray (H, W[, 3|4], uint8).
        model: registry name or checkpoint path (ignored when ``remover`` is given). The
            model is loaded once per process and reused by later calls.
        mask_only: return the 8-bit mask (0 = background, 255 = product) instead of a cutout.
        bg_color: put the product on a solid colour (``"#ffffff"``) instead of transparency.
        canvas: centre the product on a uniform canvas, e.g. ``"1000x1000"`` or a ``Canvas``.
        clean: harden near-certain regions and keep a narrow soft band at the edge, so no haze
            of the background stays (on by default; ``False`` gives the model's raw map).
        drop_fragments: with ``clean``, also drop separate parts far smaller than the product
            (strangers, smudges); off by default (README "Edges" says why).
        fill_holes: with ``clean``, also fill pin holes; off by default.
        refine: redraw the edge at full resolution: ``"off"``, ``"guided"`` (guided filter by
            the photo) or ``"matting"`` (closed-form alpha matting; the ``matting`` extra).
        alpha_matting_foreground_threshold, alpha_matting_background_threshold,
            alpha_matting_erode_size: the trimap of ``refine="matting"``, as in rembg.
        decontaminate: estimate the product's own colours in the soft edge, so no halo of the
            old background shows on ``bg_color`` (the ``matting`` extra).
        shadow: ``"contact"`` or ``"drop"`` (or a ``Shadow`` with its opacity, blur and
            offset): a soft shadow under the product, on ``bg_color``/``canvas`` outputs or
            semi-transparent on a cutout.
        format, quality: encoding for bytes results and for ``out`` (png, jpg, webp).
        out: write the result there (atomically) and return its path.
        remover: a ``Remover`` to use instead of the shared one.

    Returns:
        The same kind as ``image``: bytes, PIL image or ndarray (RGBA cutout, RGB on a colour,
        or L mask). A path gives a PIL image, or the written path when ``out`` is set.

    Raises:
        ValueError: an option we do not accept (the message names it).
        ImportError: ``refine="matting"`` or ``decontaminate`` without the ``matting`` extra.
        ImageError: the photo cannot be decoded (the message names it and says why).
        ImageTooLarge: more pixels than the limit.
        OutputTooLarge: the result is larger than ``format`` can store (WebP 16383 px a side,
            JPEG 65500); refused before the model runs.
        UnknownModel, WeightsNotFound: the model cannot be loaded.

    Example:
        >>> from clearbg import remove                                              # doctest: +SKIP
        >>> remove("photo.jpg", bg_color="#ffffff", out="photo_white.jpg")         # doctest: +SKIP
    """
    remover = remover or _shared_remover(str(model), precision)
    return remover.remove(
        image, mask_only=mask_only, bg_color=bg_color, canvas=canvas, clean=clean,
        drop_fragments=drop_fragments, fill_holes=fill_holes, refine=refine,
        alpha_matting_foreground_threshold=alpha_matting_foreground_threshold,
        alpha_matting_background_threshold=alpha_matting_background_threshold,
        alpha_matting_erode_size=alpha_matting_erode_size, decontaminate=decontaminate, shadow=shadow,
        format=format, quality=quality, out=out,
    )


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise TypeError(f"ndarray images must be uint8, got {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        return Image.fromarray(array)
    raise TypeError(f"ndarray images must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")


def _as_input_kind(source: ImageLike, result: Image.Image, fmt: str, quality: int, out: str | Path | None):
    if out is not None:
        imageio.save_image(result, Path(out), fmt if Path(out).suffix == "" else None, quality=quality)
        return Path(out)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return imageio.encode_image(result, fmt, quality=quality)
    if isinstance(source, np.ndarray):
        return np.asarray(result)
    return result
