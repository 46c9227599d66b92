"""``--batch-size auto``: the largest batch whose full training step fits in memory.

The Carvana seed's production runs hit out-of-memory and were fixed by hand, trying batch
sizes. Here each candidate batch runs two real training steps (forward, loss, backward,
optimizer step: the second step is the peak, when Adam's state already exists) on a throwaway
copy of the model, doubling from ``start`` until a step fails, then bisecting.

What "fails" means depends on the device, and both are measured, not estimated:

- CUDA: the step raises ``torch.cuda.OutOfMemoryError`` (the real limit), or, when a
  ``memory_limit_bytes`` is given, the step's peak allocated bytes
  (``torch.cuda.max_memory_allocated`` above what was allocated before it) exceed it.
- CPU: the machine has no hard per-process limit short of the kernel's OOM killer, which kills
  the process instead of raising, so a budget is needed: by default 75 % of the RAM the kernel
  reports available (``MemAvailable``) when the search starts, divided among torchrun's local
  processes (``LOCAL_WORLD_SIZE``). A step's memory is the growth of
  the process's peak resident set (Linux: ``VmHWM`` reset through ``/proc/self/clear_refs``).
  To make RSS an exact measure, the search sets glibc's mmap threshold to 64 KiB so every
  tensor is its own mapping and is returned to the OS when freed (allocator noise measured
  within ~4 MiB, against ~10 MiB without); afterwards the threshold is pinned at 32 MiB and the
  trim threshold at 64 MiB, the ceiling glibc's own dynamic threshold climbs to in a training
  process (measured: a fixed 64 KiB threshold made training steps 15-65 % slower; 32 MiB did not). A try
  whose linear extrapolation from the earlier tries exceeds the budget by 25 % (or 95 % of the
  available RAM) is rejected without running, so doubling does not walk into the OOM killer.
  The CPU allocator's "can't allocate memory" RuntimeError counts as a failure too.
  Measured limit of this method: in a process that already ran other work (320x320 inference
  with a 31 M-parameter model), the freed memory it reuses made a try read 10-60 MiB high and
  vary by that much between repeats; that errs on the safe side and is under a tenth of one
  320x320 sample (~560 MiB for u2netp or the U-Net in fp32), but it blurs very small models.

The counted memory is the step's growth over a process that already holds the model copy: the
gradients, the optimizer state and the activations. DDP's gradient buckets (about one more copy
of the parameters) and the data loader's workers are not included; leave room for them.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import gc
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from clearbg.errors import ClearbgError

CPU_MEMORY_SHARE = 0.75  # default CPU budget: this share of MemAvailable at the start
_EXTRAPOLATION_SLACK = 1.25  # skip a try predicted above budget * this
PRECISIONS = ("fp32", "bf16", "fp16")

StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class BatchSizeError(ClearbgError):
    """Not even a batch of one fits the memory budget, or memory cannot be measured here."""


@dataclass
class Try:
    """One measured batch: did it fit, and how many bytes did its training step add."""

    batch: int
    fits: bool
    bytes: int | None  # None: out of memory, or skipped by extrapolation
    reason: str = ""  # "oom", "over budget", "predicted over budget", or ""


@dataclass
class BatchSizeSearch:
    """Result of ``search_batch_size``: the batch, the budget it was held to, every try."""

    batch_size: int
    limit_bytes: int | None
    tries: list[Try] = field(default_factory=list)

    def bytes_per_sample(self) -> float | None:
        """Slope of the measured bytes against batch size (None with fewer than two fits)."""
        fitted = sorted((t.batch, t.bytes) for t in self.tries if t.bytes is not None)
        if len(fitted) < 2 or fitted[-1][0] == fitted[0][0]:
            return None
        (b0, m0), (b1, m1) = fitted[0], fitted[-1]
        return (m1 - m0) / (b1 - b0)


def surrogate_loss(model: nn.Module, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Default step loss: squared error of every output map against the mask.

    The memory of a step is its activations, gradients and optimizer state; the loss adds a few
    maps at most. Squared error works on logits and on probabilities alike and is autocast-safe,
    so it fits every registered model. Pass the training loop's own loss as ``step_fn`` for the
    exact number.
    """
    outputs = model(images)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return sum(F.mse_loss(out.float(), masks) for out in outputs)


def find_batch_size(
    model: nn.Module,
    input_size: int | tuple[int, int],
    device: str | torch.device,
    *,
    start: int = 2,
    max_batch: int = 256,
    precision: str = "fp32",
    channels_last: bool = True,
    step_fn: StepFn | None = None,
    memory_limit_bytes: int | None = None,
) -> int:
    """The largest batch for which a full training step fits in memory.

    Args:
        model: the model to train; it is deep-copied and never changed (weights, buffers,
            gradients and train/eval mode stay as they were).
        input_size: training crop as ``(width, height)`` (clearbg's convention, as in
            ``PrepareConfig.sizes``) or one int for a square.
        device: where training will run (``cpu``, ``cuda``, ``cuda:1``).
        start: first batch tried; the search doubles from there, or halves if it fails.
        max_batch: never return more than this.
        precision: ``fp32`` | ``bf16`` | ``fp16`` (autocast dtype of the training step).
        channels_last: run the step in channels-last memory format, as the loop does.
        step_fn: ``step_fn(model, images, masks) -> loss`` computing the training loss (called
            under autocast); backward and an AdamW step follow. Default: ``surrogate_loss``.
        memory_limit_bytes: budget for the bytes a step adds. Default: none on CUDA (out of
            memory is the limit), on CPU 75 % of the available RAM shared among the local
            torchrun processes.

    Returns:
        The batch size, between 1 and ``max_batch``.

    Raises:
        BatchSizeError: a batch of one does not fit, or CPU memory cannot be measured (not Linux).
        ValueError: bad ``start``/``max_batch``/``precision``.

    Example:
        >>> from clearbg.models.unet import UNet
        >>> find_batch_size(UNet(base=8), 64, "cpu", memory_limit_bytes=200 << 20)  # doctest: +SKIP
        67
    """
    return search_batch_size(
        model, input_size, device, start=start, max_batch=max_batch, precision=precision,
        channels_last=channels_last, step_fn=step_fn, memory_limit_bytes=memory_limit_bytes,
    ).batch_size


def search_batch_size(
    model: nn.Module,
    input_size: int | tuple[int, int],
    device: str | torch.device,
    *,
    start: int = 2,
    max_batch: int = 256,
    precision: str = "fp32",
    channels_last: bool = True,
    step_fn: StepFn | None = None,
    memory_limit_bytes: int | None = None,
) -> BatchSizeSearch:
    """``find_batch_size`` with its working shown: the budget and every measured try."""
    if start < 1 or max_batch < 1:
        raise ValueError(f"start and max_batch must be >= 1, got start={start}, max_batch={max_batch}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    width, height = (input_size, input_size) if isinstance(input_size, int) else input_size
    meter = _meter(device)
    limit = memory_limit_bytes if memory_limit_bytes is not None else meter.default_limit()
    search = BatchSizeSearch(batch_size=0, limit_bytes=limit)
    with meter.session():
        step = _Step(model, (height, width), device, precision, channels_last, step_fn or surrogate_loss)
        meter.measure(lambda: step(1))  # warm-up: kernels, thread pools, one-time buffers
        tried: dict[int, Try] = {}

        def fits(batch: int) -> bool:
            if batch not in tried:
                tried[batch] = _try(batch, step, meter, limit, search)
                search.tries.append(tried[batch])
            return tried[batch].fits

        search.batch_size = _largest_fitting(fits, min(start, max_batch), max_batch)
    if search.batch_size < 1:
        raise BatchSizeError(
            f"a training step with a batch of 1 at {width}x{height} does not fit "
            f"({_describe(search)}); use a smaller size or a smaller model"
        )
    return search


def _largest_fitting(fits: Callable[[int], bool], start: int, max_batch: int) -> int:
    """Doubling from ``start`` then bisection; 0 when even 1 does not fit.

    Assumes memory grows with the batch (so "fits" is monotone), which holds for convnets.
    """
    if fits(start):
        lo, hi = start, None
        while hi is None and lo < max_batch:
            nxt = min(lo * 2, max_batch)
            if fits(nxt):
                lo = nxt
            else:
                hi = nxt
        if hi is None:
            return lo
    else:
        hi, lo = start, 0
        while hi > 1:
            cand = hi // 2
            if fits(cand):
                lo = cand
                break
            hi = cand
        if lo == 0:
            return 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _try(batch: int, step: "_Step", meter: "_Meter", limit: int | None, search: BatchSizeSearch) -> Try:
    predicted = _extrapolate(search, batch)
    ceiling = meter.hard_ceiling()
    if predicted is not None and (
        (limit is not None and predicted > limit * _EXTRAPOLATION_SLACK) or (ceiling is not None and predicted > ceiling)
    ):
        return Try(batch, False, None, "predicted over budget")
    used = meter.measure(lambda: step(batch))
    if used is None:
        return Try(batch, False, None, "oom")
    if limit is not None and used > limit:
        return Try(batch, False, used, "over budget")
    return Try(batch, True, used)


def _extrapolate(search: BatchSizeSearch, batch: int) -> float | None:
    slope = search.bytes_per_sample()
    measured = [t for t in search.tries if t.bytes is not None]
    if slope is None or not measured:
        return None
    ref = max(measured, key=lambda t: t.batch)
    return ref.bytes + slope * (batch - ref.batch)


def _describe(search: BatchSizeSearch) -> str:
    limit = "no budget" if search.limit_bytes is None else f"budget {search.limit_bytes / 2**20:.0f} MiB"
    tries = ", ".join(
        f"{t.batch}: {t.reason}" + (f" {t.bytes / 2**20:.0f} MiB" if t.bytes is not None else "") for t in search.tries
    )
    return f"{limit}; tries {tries}"


class _Step:
    """Two training steps at a given batch with a throwaway AdamW; everything freed afterwards."""

    def __init__(self, model, hw, device, precision, channels_last, loss_fn):
        # The copy is made before any measurement: what a try adds is what training adds to a
        # process that already holds the model. The caller's model is never touched.
        self.model = copy.deepcopy(model).to(device).train()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.hw, self.device, self.loss_fn = hw, device, loss_fn
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, batch: int) -> None:
        # Content does not change memory; random inputs keep the search independent of data.
        images = torch.rand(batch, 3, *self.hw, device=self.device).contiguous(memory_format=self.memory_format)
        masks = (torch.rand(batch, 1, *self.hw, device=self.device) > 0.5).float()
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-6)
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()
        )
        try:
            for _ in range(2):  # the 2nd step runs with Adam's state allocated: the true peak
                with autocast:
                    loss = self.loss_fn(self.model, images, masks)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                del loss
        finally:
            optimizer.zero_grad(set_to_none=True)
            del optimizer, images, masks


class _Meter:
    def default_limit(self) -> int | None:
        raise NotImplementedError

    def hard_ceiling(self) -> int | None:
        return None

    def session(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def measure(self, fn: Callable[[], None]) -> int | None:
        """Bytes ``fn`` added at its peak, or None if it ran out of memory."""
        raise NotImplementedError


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):  # CUDA (and other accelerators)
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("DefaultCPUAllocator" in text and "allocate" in text)


def _run_catching_oom(fn: Callable[[], None]) -> bool:
    """Run ``fn``; False when it ran out of memory. The exception (and the frames holding its
    tensors) is dropped before returning, so the memory can be freed."""
    try:
        fn()
        return True
    except (RuntimeError, torch.OutOfMemoryError) as err:
        if not _is_oom(err):
            raise
    return False


class _CudaMeter(_Meter):
    def __init__(self, device: torch.device):
        self.device = device

    def default_limit(self) -> int | None:
        return None

    def measure(self, fn):
        _free(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        ok = _run_catching_oom(fn)
        _free(self.device)
        return torch.cuda.max_memory_allocated(self.device) - before if ok else None


class _CpuMeter(_Meter):
    """Peak RSS growth of this process (Linux /proc), with glibc tuned for exact RSS."""

    def __init__(self):
        if not _can_reset_peak_rss():
            raise BatchSizeError(
                "measuring CPU memory needs Linux (/proc/self/status and a writable "
                "/proc/self/clear_refs); set the batch size by hand instead of 'auto'"
            )
        self.libc = _glibc()

    def default_limit(self) -> int:
        # Under torchrun every local process searches at once and each will train with its
        # batch: they share the machine's RAM.
        local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        return int(_meminfo_bytes("MemAvailable") * CPU_MEMORY_SHARE / local_processes)

    def hard_ceiling(self) -> int:
        return int(_meminfo_bytes("MemAvailable") * 0.95)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        if self.libc is not None:
            self.libc.mallopt(_M_MMAP_THRESHOLD, 64 << 10)
        try:
            yield
        finally:
            if self.libc is not None:
                self.libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
                self.libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
            _free(torch.device("cpu"))

    def measure(self, fn):
        _free(torch.device("cpu"))
        if self.libc is not None:
            self.libc.malloc_trim(0)
        before = _status_bytes("VmRSS")
        _reset_peak_rss()
        ok = _run_catching_oom(fn)
        peak = _status_bytes("VmHWM")
        _free(torch.device("cpu"))
        if self.libc is not None:
            self.libc.malloc_trim(0)
        return max(peak - before, 0) if ok else None


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h


def _meter(device: torch.device) -> _Meter:
    return _CudaMeter(device) if device.type == "cuda" else _CpuMeter()


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # musl or no libc found: RSS is then a looser measure, still an upper bound
        return None


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise BatchSizeError(f"/proc/self/status has no {key}")


def _meminfo_bytes(key: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise BatchSizeError(f"/proc/meminfo has no {key}")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # "5": reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)


def _can_reset_peak_rss() -> bool:
    try:
        _reset_peak_rss()
        _status_bytes("VmHWM")
        return True
    except (OSError, BatchSizeError):
        return False


def measure_step_memory(
    model: nn.Module,
    input_size: int | tuple[int, int],
    batch: int,
    device: str | torch.device = "cpu",
    *,
    precision: str = "fp32",
    channels_last: bool = True,
    step_fn: StepFn | None = None,
) -> int | None:
    """Bytes two training steps at ``batch`` add, measured as ``find_batch_size`` does.

    Returns None when the step runs out of memory. Useful to check a search or to plan a budget.

    Example:
        >>> from clearbg.models.unet import UNet
        >>> measure_step_memory(UNet(base=8), 64, 4) > 0  # doctest: +SKIP
        True
    """
    device = torch.device(device)
    width, height = (input_size, input_size) if isinstance(input_size, int) else input_size
    meter = _meter(device)
    with meter.session():
        step = _Step(model, (height, width), device, precision, channels_last, step_fn or surrogate_loss)
        meter.measure(lambda: step(1))
        return meter.measure(lambda: step(batch))


__all__ = [
    "BatchSizeError", "BatchSizeSearch", "Try", "find_batch_size", "measure_step_memory", "search_batch_size",
    "surrogate_loss",
]
