"""Photos in, foreground probability maps out, at each photo's own resolution.

One ``Predictor`` loads a model once and runs batches. The default on CPUs with int8 units
(VNNI, AMX-INT8) runs u2netp as a calibrated int8 export on ONNX Runtime (``int8_cache``): 1.5-1.8x
fp32's images/s, mean IoU within 0.001 of fp32's on the fashion and cars test photos
(bench/precision.py). Elsewhere the PyTorch engine folds BatchNorm into the convs, fuses ReLU into
oneDNN's convolution and computes in fp32; ``precision="bf16"`` is about 3x fp32 where the CPU has
native bf16, but costs 0.0015 mean IoU on fashion photos, so it is never chosen for you.

Batches on CPU run one photo per core (each worker thread with one intra-op thread) rather than
one stacked tensor: half of u2netp's CPU time is memory-bound ops (cat, upsample, pooling) on
small maps that scale poorly across threads, and stacking photos only adds cache misses.
Measured on 2 cores: 72 ms/photo this way against 88 ms with one 2-thread stream.
"""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clearbg.inference.cpu import cpu_features, int8_native
from clearbg.inference.optimize import optimize_for_inference
from clearbg.models.hub import ModelRef, ResolvedModel, is_onnx_export, resolve
from clearbg.models.specs import DEFAULT_MODEL

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
# Architectures whose int8 export was measured to keep fp32's masks (bench/precision.py). u2net
# was not: ONNX Runtime's calibrator also keeps every intermediate tensor of every calibration
# photo in memory, several GB at u2net's widths.
INT8_ARCHS = ("u2netp",)
ENGINES = ("auto", "torch", "onnxruntime")
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Prediction:
    """A photo's probability map with the maps the quality gate reads (``clearbg.quality``).

    Attributes:
        prob: foreground probability at the photo's own size (what ``Predictor.predict`` gives).
        small: the same map at the model's resolution, cropped to the photo's content box.
        sides: U2-Net's six side outputs there, (6, h, w), each min-max stretched like the
            fused map; None when the engine has only the fused map (an ONNX export).
        flipped: the fused map of the horizontally flipped photo, flipped back (h, w); None
            unless asked for.
    """

    prob: np.ndarray
    small: np.ndarray
    sides: np.ndarray | None = None
    flipped: np.ndarray | None = None


def default_precision(device: torch.device, arch: str | None = None) -> str:
    """fp16 on CUDA; int8 for u2netp on CPUs with int8 units (on ONNX Runtime); else fp32."""
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and arch in INT8_ARCHS and int8_native():
        return "int8"
    return "fp32"


class Predictor:
    """Load a model once; predict foreground probability maps for batches of photos.

    Args:
        model: any model reference (``clearbg.models.hub.resolve``: a spec name, a checkpoint,
            a ``clearbg export`` .onnx, ``models:/``, ``runs:/``, an ``nn.Module``), or a
            ``ResolvedModel``.
        device: ``cpu``, ``cuda``, ... (default: CUDA when available).
        precision: ``auto`` (``default_precision``) | ``fp32`` | ``bf16`` | ``fp16`` | ``int8``
            (ONNX Runtime: the model's calibrated int8 export, built once and cached).
        batch_size: photos per batch: one stacked forward pass on GPU, one photo per core on
            CPU. Default: 8 on GPU, the number of cores on CPU; 1 gives the lowest latency.
        engine: ``torch``; ``onnxruntime`` (``clearbg.inference.onnx_engine``: a ``clearbg
            export`` .onnx file as is, anything else exported in memory as fp32, or fp16 with
            ``precision="fp16"``, int8 from the cache with ``int8``; computes on ONNX Runtime's
            CPU provider); ``auto`` (default): onnxruntime for a .onnx file written by ``clearbg
            export`` or for int8, else torch. A given .onnx file runs in its own precision.

    Example:
        >>> predictor = Predictor("u2netp")                      # doctest: +SKIP
        >>> [prob] = predictor.predict([Image.open("photo.jpg")])  # doctest: +SKIP
        >>> prob.shape == (height, width)                         # doctest: +SKIP
    """

    def __init__(
        self,
        model: ModelRef | ResolvedModel = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = None,
        precision: str = "auto",
        batch_size: int | None = None,
        engine: str = "auto",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        exported = is_onnx_export(model)
        found = model if isinstance(model, ResolvedModel) else resolve(model, onnx=exported or engine == "onnxruntime")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision == "auto" and not exported and engine != "torch" and found.onnx is None:
            precision = default_precision(self.device, found.spec.arch)
        if engine == "auto":
            engine = "onnxruntime" if exported or precision == "int8" else "torch"
        if engine == "torch" and precision == "int8":
            raise ValueError("int8 runs on ONNX Runtime: use engine='onnxruntime' (or 'auto')")
        self.engine, self.source = engine, found.source
        # The reference as given (a name, file or URI): what finds the model's calibration.
        self.model = None if isinstance(model, (ResolvedModel, torch.nn.Module)) else model
        cores = torch.get_num_threads()
        if engine == "onnxruntime":
            from clearbg.inference.onnx_engine import ort_network

            network = ort_network(found, precision)
            # Pre/post-processing on the CPU in float32; ONNX Runtime picks its own provider.
            self.device, self.dtype, self.precision = torch.device("cpu"), torch.float32, network.metadata.variant
            self.module, self.spec = network, network.spec
        else:
            if found.network is None:
                raise ValueError(f"{found.source} is an ONNX export: run it with engine='onnxruntime'")
            self.precision = default_precision(self.device) if precision == "auto" else precision
            self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
            module = optimize_for_inference(copy.deepcopy(found.network), self.device)
            self.module = module.to(self.device, self.dtype, memory_format=torch.channels_last)
            self.spec = found.spec
        default_batch = 8 if self.device.type == "cuda" else cores
        self.batch_size = max(1, int(batch_size or default_batch))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def summary(self) -> str:
        """What runs, in one line: ``u2netp.official on cpu: onnxruntime int8 (AMX-BF16, ...)``."""
        line = f"{self.spec.name} on {self.device.type}: {self.engine} {self.precision}"
        if self.device.type == "cpu":
            line += f" ({', '.join(cpu_features()) or 'no bf16 or int8 units'}; {torch.get_num_threads()} cores)"
        return line

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def has_sides(self) -> bool:
        """Whether ``predict_detailed`` gives side outputs: U2-Net on the PyTorch engine (an ONNX
        export carries the fused map only, a U-Net has no sides)."""
        return self.engine == "torch" and self.spec.arch in ("u2net", "u2netp")

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """The model's input for ``image`` by its spec's preprocessing contract.

        Returns:
            uint8 array (size, size, 3). Transparent photos are flattened onto white first.
        """
        return self.spec.preprocess.to_array(image)

    @torch.inference_mode()
    def predict_small(self, inputs: np.ndarray, *, sides: bool = False) -> torch.Tensor:
        """Run the network on preprocessed inputs.

        Args:
            inputs: uint8 (B, size, size, 3) from ``preprocess``.
            sides: also return U2-Net's side outputs (the network computes them anyway; the
                fused map is made from them). An engine without them returns the fused map alone.

        Returns:
            float32 (B, C, size, size) probabilities, each map min-max normalised per image as
            in the official test script: C = 1 (the fused map), or 7 (fused first, then side
            outputs 1..6) with ``sides`` on the PyTorch engine.
        """
        x = self.spec.preprocess.normalise(torch.from_numpy(inputs).to(self.device).permute(0, 3, 1, 2))
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        fused_only = not sides or self.engine == "onnxruntime"
        prob = torch.cat([
            _stack(self.module(x[start : start + self.batch_size], fused_only=fused_only)).float()
            for start in range(0, len(x), self.batch_size)
        ])
        lo = prob.amin(dim=(2, 3), keepdim=True)
        hi = prob.amax(dim=(2, 3), keepdim=True)
        return (prob - lo) / (hi - lo).clamp_min(1e-8)

    def predict(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Foreground probability (float32, 0..1) of each photo, at the photo's own size."""
        if self.device.type == "cpu":
            return self.map(self.predict_one, images)
        small = self.predict_small(np.stack([self.preprocess(im) for im in images])) if images else []
        return [self.restore(small[i], im) for i, im in enumerate(images)]

    def predict_one(self, image: Image.Image) -> np.ndarray:
        """Foreground probability of one photo; safe to call from several threads at once."""
        return self.restore(self.predict_small(self.preprocess(image)[None])[0], image)

    def predict_detailed(self, images: Sequence[Image.Image], *, flip: bool = False) -> list[Prediction]:
        """Like ``predict``, with the maps the quality gate scores (see ``Prediction``).

        The side outputs cost nothing extra; ``flip`` runs the network a second time on the
        mirrored photos (test-time augmentation), doubling its cost.
        """
        if self.device.type == "cpu":
            return self.map(lambda image: self._detailed([image], flip)[0], images)
        return self._detailed(images, flip) if images else []

    def _detailed(self, images: Sequence[Image.Image], flip: bool) -> list[Prediction]:
        inputs = np.stack([self.preprocess(im) for im in images])
        if flip:
            inputs = np.concatenate([inputs, inputs[:, :, ::-1]])
        maps = self.predict_small(inputs, sides=True)
        n = len(images)
        found = []
        for i, image in enumerate(images):
            left, top, right, bottom = self.spec.preprocess.content_box(image.width, image.height)
            box = maps[:, :, top:bottom, left:right]
            mirrored = None
            if flip:  # the mirrored photo's map, mirrored back, in the same box
                back = maps[n + i, 0].flip(-1)[top:bottom, left:right]
                mirrored = back.cpu().numpy()
            found.append(Prediction(
                prob=self.restore(maps[i, :1], image),
                small=box[i, 0].cpu().numpy(),
                sides=box[i, 1:].cpu().numpy() if maps.shape[1] > 1 else None,
                flipped=mirrored,
            ))
        return found

    def restore(self, prob: torch.Tensor, image: Image.Image) -> np.ndarray:
        """A (1, S, S) map at the photo's own size: its content box (the contract's) upsampled."""
        left, top, right, bottom = self.spec.preprocess.content_box(image.width, image.height)
        return upsample(prob[:, top:bottom, left:right], image.height, image.width)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]``, one item per core on CPU when there are several.

        Used for the whole per-photo path (decode, predict, compose) so every stage runs in
        parallel, not only the network.
        """
        if self.device.type != "cpu" or len(items) < 2 or self.batch_size < 2:
            return [fn(item) for item in items]
        return list(self._cpu_pool().map(fn, items))

    def _cpu_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                workers = min(self.batch_size, torch.get_num_threads())
                # Each worker computes single-threaded; together they fill the cores.
                self._pool = ThreadPoolExecutor(
                    workers, thread_name_prefix="clearbg-predict", initializer=torch.set_num_threads, initargs=(1,)
                )
            return self._pool


def _stack(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The network's output as one (B, C, S, S) tensor (the fused map alone, or all seven)."""
    return torch.cat(outputs, 1) if isinstance(outputs, tuple) else outputs


def upsample(prob: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a (1, h, w) map to (height, width): smooth edges, never blocky."""
    full = F.interpolate(prob[None].float(), size=(height, width), mode="bilinear", align_corners=False)
    return full[0, 0].clamp_(0, 1).cpu().numpy()
