"""How a photo becomes a network input: one contract, owned by the model's spec.

Training (``data/prepare`` and ``train``), the predictor, the ONNX export's metadata and the
in-browser page all read the same :class:`Preprocess`, so a model sees the same geometry and the
same numbers in training and in use. The official U2-Net recipe, which these defaults follow:

1. resize the photo to ``size`` x ``size``, each axis on its own (``stretch``, aspect not kept),
   bilinear with antialiasing (Pillow's filter);
2. divide each photo by its own maximum (not by 255), then per channel ``(x - mean) / std``;
3. and back: the output map's :meth:`Preprocess.content_box` is scaled (bilinear) to the photo.

Example:
    >>> pre = Preprocess(size=4)
    >>> pre.to_array(Image.new("RGB", (8, 2), "white")).shape
    (4, 4, 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from clearbg.imageio import flatten

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("stretch", "pad")
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                  "lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    """The input contract of a model.

    Attributes:
        size: the square side S of the network's input.
        resize: ``stretch`` (each axis alone, as U2-Net was trained) or ``pad`` (keep the
            aspect, centre on ``pad_color``).
        interpolation: Pillow filter for the photo (``bilinear``, ``bicubic``, ``lanczos``).
        mean, std: per-channel normalisation after dividing by the photo's own maximum.
        pad_color: the padding colour for ``pad``.
    """

    size: int = 320
    resize: str = "stretch"
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pad_color: tuple[int, int, int] = (255, 255, 255)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")

    def resize_image(self, image: Image.Image, size: tuple[int, int] | None = None) -> Image.Image:
        """``image`` (RGB) at ``size`` = (width, height) (default S x S) by this contract's rule."""
        width, height = size or (self.size, self.size)
        flt = INTERPOLATIONS[self.interpolation]
        if self.resize == "stretch":
            return image.resize((width, height), flt)
        box = fit_box(image.size, (width, height))
        canvas = Image.new("RGB", (width, height), self.pad_color)
        canvas.paste(image.resize((box[2] - box[0], box[3] - box[1]), flt), box[:2])
        return canvas

    def to_array(self, image: Image.Image) -> np.ndarray:
        """uint8 (S, S, 3) RGB network input before normalisation; transparent photos are
        flattened onto white first (what the product looks like on a shop page)."""
        return np.array(self.resize_image(image if image.mode == "RGB" else flatten(image)), dtype=np.uint8)

    def normalise(self, images):
        """(B, 3, H, W) RGB in any scale (uint8 0..255 or float 0..1) -> the network's float input.

        Takes a ``torch.Tensor`` (training, the PyTorch engine) or a NumPy array (the ONNX
        Runtime engine, which runs without PyTorch) and returns the same kind, float32.
        Dividing by each photo's own maximum makes the result independent of the scale, so
        training's 0..1 tensors and the predictor's uint8 arrays give the same numbers.
        """
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
        if isinstance(images, np.ndarray):
            x = images.astype(np.float32)
            x /= np.maximum(x.max(axis=(1, 2, 3), keepdims=True), np.float32(1e-6))
            return (x - mean) / std
        x = images.float()
        x = x / x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
        return (x - x.new_tensor(mean)) / x.new_tensor(std)

    def content_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Where a ``width`` x ``height`` photo lies in the S x S input (left, top, right, bottom):
        the whole input for ``stretch``, the centred band for ``pad``. The predictor maps the
        model's output back to the photo from this box alone."""
        if self.resize == "stretch":
            return 0, 0, self.size, self.size
        return fit_box((width, height), (self.size, self.size))

    def to_dict(self) -> dict:
        """JSON-ready fields (ONNX metadata, the browser page, checkpoints)."""
        return {"size": self.size, "resize": self.resize, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std), "pad_color": list(self.pad_color)}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        return cls(size=int(data["size"]), resize=data.get("resize", "stretch"),
                   interpolation=data.get("interpolation", "bilinear"), mean=tuple(data["mean"]),
                   std=tuple(data["std"]), pad_color=tuple(data.get("pad_color", (255, 255, 255))))


def fit_box(source: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of ``source`` (w, h) scaled to fit ``target`` (w, h), centred."""
    (src_w, src_h), (width, height) = source, target
    scale = min(width / src_w, height / src_h)
    new_w, new_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    left, top = (width - new_w) // 2, (height - new_h) // 2
    return left, top, left + new_w, top + new_h
