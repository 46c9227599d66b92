"""Atomic training checkpoints that resume a run exactly where it stopped.

A checkpoint holds everything the next step depends on: model weights and BatchNorm buffers,
optimizer state, learning-rate schedule, gradient scaler, the RNG states (Python, NumPy,
torch, CUDA), where the run stands (epoch, batches done in that epoch, global step, the
running sums of the epoch's train loss), the best validation IoU so far, the per-epoch history
and the resolved config. Data order and augmentation are functions of (seed, epoch, index)
(``clearbg.data.dataset``), so with the position restored the resumed run draws the same
batches as an uninterrupted one, with any number of DataLoader workers.

Files, under ``<run_dir>/checkpoints/``:

* ``latest.pt``: the full state, rewritten at every save (``checkpoint_every`` steps and each
  epoch end); what ``resume=auto`` continues from.
* ``best.pt``: weights, config and metrics of the epoch with the best validation IoU.

Both load with ``torch.load(..., weights_only=True)`` (only tensors, numbers, strings, lists and
dicts inside) and with ``clearbg remove --model <file>`` (the weights sit under ``"model"``).
Writes are atomic: a temporary file in the same folder, fsync, then ``os.replace``, so a kill
at any moment leaves the previous checkpoint or the new one, never a torn file.

Example:
    >>> save_checkpoint("runs/a/checkpoints/latest.pt", {"model": model.state_dict(), ...})  # doctest: +SKIP
    >>> payload = load_checkpoint("runs/a/checkpoints/latest.pt")                           # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clearbg.errors import CheckpointMismatch

__all__ = [
    "BEST",
    "CHECKPOINT_DIR",
    "FORMAT_VERSION",
    "LATEST",
    "capture_rng_state",
    "checkpoint_paths",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
BEST = "best.pt"
FORMAT_VERSION = 1


def checkpoint_paths(run_dir: str | Path) -> tuple[Path, Path]:
    """(latest, best) checkpoint paths of a run folder."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    return folder / LATEST, folder / BEST


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state, in types ``torch.load(weights_only=True)`` accepts.

    Example:
        >>> state = capture_rng_state(); _ = torch.rand(1); restore_rng_state(state)
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what ``capture_rng_state`` recorded (CUDA only when both sides have it)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    Args:
        path: local file path; parent folders are created.
        payload: a dict of tensors, numbers, strings, lists and dicts (what
            ``torch.load(weights_only=True)`` accepts); ``format_version`` is added.

    Returns:
        The path written.

    Example:
        >>> save_checkpoint(tmp / "x.pt", {"model": {"w": torch.zeros(2)}})  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    # The rename itself must reach the disk too, or a power cut could bring the old file back.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (safely: ``weights_only=True``).

    Raises:
        CheckpointMismatch: missing, unreadable, or not a clearbg training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointMismatch(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip, pickle and unpickler errors all mean "not a checkpoint we can read"
        raise CheckpointMismatch(f"{path}: not a readable checkpoint ({err})") from err
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointMismatch(f"{path}: not a clearbg training checkpoint (no 'model' entry)")
    version = payload.get("format_version")
    if version is not None and version > FORMAT_VERSION:
        raise CheckpointMismatch(f"{path}: checkpoint format {version} is newer than this clearbg ({FORMAT_VERSION}); upgrade clearbg")
    return payload
