"""Photos in, foreground probability maps out, at each photo's own resolution.

One ``Predictor`` loads a model once and runs batches. The default on CPUs with int8 units
(VNNI, AMX-INT8) runs u2netp as a calibrated int8 export on ONNX Runtime (``int8_cache``): 1.5-1.8x
fp32's images/s, mean IoU within 0.001 of fp32's on the fashion and cars test photos
(bench/precision.py). Elsewhere the PyTorch engine folds BatchNorm into the convs, fuses ReLU into
oneDNN's convolution and computes in fp32; ``precision="bf16"`` is about 3x fp32 where the CPU has
native bf16, but costs 0.0015 mean IoU on fashion photos, so it is never chosen for you.

Pre- and post-processing are NumPy and Pillow, so a model whose int8 export is already cached
runs without importing PyTorch at all (about a second of a one-photo command's start-up).

Batches on CPU run one photo per core (each worker thread with one intra-op thread) rather than
one stacked tensor: half of u2netp's CPU time is memory-bound ops (cat, upsample, pooling) on
small maps that scale poorly across threads, and stacking photos only adds cache misses.
Measured on 2 cores: 72 ms/photo this way against 88 ms with one 2-thread stream.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

import numpy as np
from PIL import Image

from clearbg.errors import WeightsNotFound
from clearbg.inference.cpu import cpu_features, int8_native
from clearbg.models.hub import (ModelRef, ResolvedModel, is_checkpoint_path, is_module, is_onnx_export,
                                released_source, resolve)
from clearbg.models.mlflow_uris import is_mlflow_uri
from clearbg.models.specs import DEFAULT_MODEL, ModelSpec, get_spec

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
# Architectures whose int8 export was measured to keep fp32's masks (bench/precision.py). u2net
# was not: ONNX Runtime's calibrator also keeps every intermediate tensor of every calibration
# photo in memory, several GB at u2net's widths.
INT8_ARCHS = ("u2netp",)
ENGINES = ("auto", "torch", "onnxruntime")
T = TypeVar("T")
R = TypeVar("R")
_worker = threading.local()  # .active: this thread is one of a predictor's per-core workers


@dataclass(frozen=True)
class Prediction:
    """A photo's probability map with the maps the quality gate reads (``clearbg.quality``).

    Attributes:
        prob: foreground probability at the photo's own size (what ``Predictor.predict`` gives;
            with ``tta``, the mean of the photo's and the mirror image's maps).
        small: the photo's own map (one pass, what confidence calibrations are fitted on) at
            the model's resolution, cropped to the photo's content box.
        sides: U2-Net's six side outputs there, (6, h, w), each min-max stretched like the
            fused map; None when the engine has only the fused map (an ONNX export).
        flipped: the fused map of the horizontally flipped photo, flipped back (h, w); None
            unless asked for.
    """

    prob: np.ndarray
    small: np.ndarray
    sides: np.ndarray | None = None
    flipped: np.ndarray | None = None


def default_precision(device: str | torch.device, arch: str | None = None) -> str:
    """fp16 on CUDA; int8 for u2netp on CPUs with int8 units (on ONNX Runtime); else fp32."""
    kind = _device_type(device)
    if kind == "cuda":
        return "fp16"
    if kind == "cpu" and arch in INT8_ARCHS and int8_native():
        return "int8"
    return "fp32"


def default_device() -> str:
    """``cuda`` where PyTorch sees a GPU, else ``cpu``. PyTorch is asked only where a GPU
    driver is installed (``/proc/driver/nvidia``, ROCm's ``/dev/kfd``) or the OS is not Linux:
    importing it costs about a second."""
    drivers = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd")
    if sys.platform == "linux" and not any(os.path.exists(path) for path in drivers):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_cores() -> int:
    """The cores a predictor spreads photos over: PyTorch's thread count once it is loaded (it
    honours ``torch.set_num_threads``), else ``OMP_NUM_THREADS`` or the cores this process may use."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _device_type(device: str | torch.device) -> str:
    return str(device).split(":", 1)[0]


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
        tta: test-time flip: each map is the mean of the photo's and of its mirror image's
            (mirrored back), for twice the network's cost.
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
        tta: bool = False,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.device = str(device) if device is not None else default_device()
        # The reference as given (a name, file or URI): what finds the model's calibration.
        self.model = None if isinstance(model, ResolvedModel) or is_module(model) else model
        exported = is_onnx_export(model)
        cached = None if exported else _cached_released_int8(model, self.device, precision, engine)
        if cached is not None:  # no PyTorch needed: the export is on disk
            spec, path = cached
            self.engine, self.source = "onnxruntime", released_source(spec)
            self._run_on_onnxruntime(_ort_file(path))
        else:
            found = model if isinstance(model, ResolvedModel) else resolve(model, onnx=exported or engine == "onnxruntime")
            if precision == "auto" and not exported and engine != "torch" and found.onnx is None:
                precision = default_precision(self.device, found.spec.arch)
            if engine == "auto":
                engine = "onnxruntime" if exported or precision == "int8" else "torch"
            if engine == "torch" and precision == "int8":
                raise ValueError("int8 runs on ONNX Runtime: use engine='onnxruntime' (or 'auto')")
            self.engine, self.source = engine, found.source
            if engine == "onnxruntime":
                from clearbg.inference.onnx_engine import ort_network

                self._run_on_onnxruntime(ort_network(found, precision))
            else:
                self._run_on_torch(found, precision)
        self.tta = bool(tta)
        cores = cpu_cores()
        self.batch_size = max(1, int(batch_size or (8 if self.device_type == "cuda" else cores)))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._worker_module = None  # ONNX Runtime: the one-thread session the per-core workers run

    def _run_on_onnxruntime(self, network) -> None:
        # Pre/post-processing on the CPU in float32; ONNX Runtime picks its own provider.
        self.device, self.precision = "cpu", network.metadata.variant
        self.module, self.spec = network, network.spec

    def _run_on_torch(self, found: ResolvedModel, precision: str) -> None:
        import torch

        from clearbg.inference.optimize import optimize_for_inference

        if found.network is None:
            raise ValueError(f"{found.source} is an ONNX export: run it with engine='onnxruntime'")
        self.precision = default_precision(self.device) if precision == "auto" else precision
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        module = optimize_for_inference(copy.deepcopy(found.network), torch.device(self.device))
        self.module = module.to(self.device, self.dtype, memory_format=torch.channels_last)
        self.spec = found.spec

    @property
    def device_type(self) -> str:
        """``cpu`` or ``cuda`` (``device`` may name one GPU: ``cuda:1``)."""
        return _device_type(self.device)

    @property
    def summary(self) -> str:
        """What runs, in one line: ``u2netp.official on cpu: onnxruntime int8 (AMX-BF16, ...)``."""
        line = f"{self.spec.name} on {self.device_type}: {self.engine} {self.precision}"
        if self.tta:
            line += " + flip TTA"
        if self.device_type == "cpu":
            line += f" ({', '.join(cpu_features()) or 'no bf16 or int8 units'}; {cpu_cores()} cores)"
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

    def predict_small(self, inputs: np.ndarray, *, sides: bool = False) -> np.ndarray:
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
        x = self.spec.preprocess.normalise(inputs.transpose(0, 3, 1, 2))
        if self.engine == "onnxruntime":
            network = self._worker_module if getattr(_worker, "active", False) and self._worker_module else self.module
            prob = np.concatenate([network(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)])
        else:
            prob = self._torch_forward(x, sides)
        lo = prob.min(axis=(2, 3), keepdims=True)
        hi = prob.max(axis=(2, 3), keepdims=True)
        return (prob - lo) / np.maximum(hi - lo, np.float32(1e-8))

    def _torch_forward(self, x: np.ndarray, sides: bool) -> np.ndarray:
        import torch

        with torch.inference_mode():
            # x is (B, 3, S, S) over (B, S, S, 3) memory: channels-last already, no copy here.
            batch = torch.from_numpy(x).to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
            prob = torch.cat([
                _stack(self.module(batch[i : i + self.batch_size], fused_only=not sides)).float()
                for i in range(0, len(batch), self.batch_size)
            ])
            return prob.cpu().numpy()

    def predict(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Foreground probability (float32, 0..1) of each photo, at the photo's own size."""
        if self.device_type == "cpu":
            return self.map(self.predict_one, images)
        if self.tta:
            return [found.prob for found in self._detailed(images, True)] if images else []
        small = self.predict_small(np.stack([self.preprocess(im) for im in images])) if images else []
        return [self.restore(small[i], im) for i, im in enumerate(images)]

    def predict_one(self, image: Image.Image) -> np.ndarray:
        """Foreground probability of one photo; safe to call from several threads at once."""
        if self.tta:
            return self._detailed([image], True)[0].prob
        return self.restore(self.predict_small(self.preprocess(image)[None])[0], image)

    def predict_detailed(self, images: Sequence[Image.Image], *, flip: bool = False) -> list[Prediction]:
        """Like ``predict``, with the maps the quality gate scores (see ``Prediction``).

        The side outputs cost nothing extra; ``flip`` runs the network a second time on the
        mirrored photos, doubling its cost (with ``tta`` that pass is made anyway).
        """
        if self.device_type == "cpu":
            return self.map(lambda image: self._detailed([image], flip)[0], images)
        return self._detailed(images, flip) if images else []

    def _detailed(self, images: Sequence[Image.Image], flip: bool) -> list[Prediction]:
        flip = flip or self.tta
        inputs = np.stack([self.preprocess(im) for im in images])
        if flip:
            inputs = np.concatenate([inputs, inputs[:, :, ::-1]])
        maps = self.predict_small(inputs, sides=True)
        n = len(images)
        found = []
        for i, image in enumerate(images):
            left, top, right, bottom = self.spec.preprocess.content_box(image.width, image.height)
            box = maps[:, :, top:bottom, left:right]
            mirrored, fused = None, maps[i, :1]
            if flip:  # the mirrored photo's map, mirrored back, in the same box
                back = maps[n + i, :1, :, ::-1]
                mirrored = np.ascontiguousarray(back[0, top:bottom, left:right])
                if self.tta:
                    fused = (fused + back) / 2
            found.append(Prediction(
                prob=self.restore(fused, image),
                small=box[i, 0],
                sides=box[i, 1:] if maps.shape[1] > 1 else None,
                flipped=mirrored,
            ))
        return found

    def restore(self, prob: np.ndarray, image: Image.Image) -> np.ndarray:
        """A (1, S, S) map at the photo's own size: its content box (the contract's) upsampled."""
        left, top, right, bottom = self.spec.preprocess.content_box(image.width, image.height)
        return upsample(prob[0, top:bottom, left:right], image.height, image.width)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]``, one item per core on CPU when there are several.

        Used for the whole per-photo path (decode, predict, compose) so every stage runs in
        parallel, not only the network.
        """
        if self.device_type != "cpu" or len(items) < 2 or self.batch_size < 2:
            return [fn(item) for item in items]
        return list(self._cpu_pool().map(fn, items))

    def _cpu_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                workers = min(self.batch_size, cpu_cores())
                threads = max(1, cpu_cores() // workers)
                # Each worker computes on its share of the cores (one, when there are as many
                # photos as cores); a photo alone (no pool) gets every core. For ONNX Runtime
                # the workers get their own session: sharing the all-core one cost 10 % of
                # int8's images/s on 2 cores.
                setup = None
                if self.engine == "torch":
                    import torch

                    setup = torch.set_num_threads
                else:
                    self._worker_module = self.module.with_threads(threads)
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix="clearbg-predict",
                                                initializer=_start_worker, initargs=(setup, threads))
            return self._pool


def _start_worker(set_threads: Callable[[int], None] | None, threads: int) -> None:
    _worker.active = True
    if set_threads is not None:
        set_threads(threads)


def _stack(outputs):
    """The network's output as one (B, C, S, S) tensor (the fused map alone, or all seven)."""
    import torch

    return torch.cat(outputs, 1) if isinstance(outputs, tuple) else outputs


def upsample(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of an (h, w) map to (height, width): smooth edges, never blocky.
    (Pillow's float resize: half-pixel centres and edge clamping as PyTorch's bilinear
    ``interpolate``, antialiased where it shrinks.)"""
    small = Image.fromarray(np.ascontiguousarray(prob, dtype=np.float32))
    return np.clip(np.asarray(small.resize((width, height), Image.Resampling.BILINEAR)), 0, 1)


def _cached_released_int8(model: object, device: str, precision: str, engine: str) -> tuple[ModelSpec, Path] | None:
    """The spec and cached int8 file when ``model`` names a spec whose released weights would
    run as int8 here and whose export is already built; None otherwise (then ``resolve`` loads
    the network, with PyTorch, and builds what is missing)."""
    if not isinstance(model, (str, Path)) or is_checkpoint_path(model) or is_mlflow_uri(str(model)):
        return None
    if _device_type(device) != "cpu" or engine == "torch" or precision not in ("auto", "int8"):
        return None
    spec = get_spec(str(model))
    if spec.weights is None or (precision == "auto" and default_precision("cpu", spec.arch) != "int8"):
        return None
    from clearbg.inference.int8_cache import released_int8_path

    try:
        path = released_int8_path(spec)
    except WeightsNotFound:
        return None  # resolve() says how to download them
    return (spec, path) if path.is_file() else None


def _ort_file(path: Path):
    from clearbg.inference.onnx_engine import OrtNetwork

    return OrtNetwork(path)
