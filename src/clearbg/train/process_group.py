"""Process-group plumbing for training: one process, torchrun / DDP, or Spark's TorchDistributor.

The training loop calls :func:`setup_distributed` itself, so the same ``clearbg.train.loop.train``
runs unchanged in a plain Python process (world size 1, no process group), under ``torchrun``
(which sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT) and under Spark's
TorchDistributor (``spark_launcher``, which launches torchrun itself). Backends:
gloo on CPU, NCCL on CUDA. Metrics are reduced as sums of counts (:func:`all_reduce_sum`), never
as averages of per-rank averages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from clearbg.errors import ClearbgError


# gloo's default is 30 min; a peer that died mid-collective should fail the survivors well before
# that so torchrun's elastic agent can restart the group (it also tears them down itself).
_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, 0 .. world_size - 1 (0 without a process group).
        world_size: number of processes in the job (1 without torchrun).
        local_rank: rank on this machine; selects the GPU.
        device: the device this process trains on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only process that writes checkpoints and tracking."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one member is active."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ClearbgError(f"environment variable {name}={value!r} must be an integer (set by torchrun)") from err


def _resolve_device(device: str | None, local_rank: int) -> torch.device:
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ClearbgError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or leave it unset") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ClearbgError(f"device {device!r} asked for, but torch sees no CUDA GPU; use --device cpu")
        if dev.index is None:  # one GPU per local rank
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    return dev


def _restart_scoped_store(world_size: int) -> dist.Store | None:
    """The torchrun agent's key-value store, with a key space of its own for this restart attempt.

    torchrun shares its rendezvous TCPStore with the workers and keeps it across elastic
    restarts, but the process group writes the same keys in every attempt (each rank's gloo
    address). After a restart a worker can read a dead peer's address from the failed attempt and
    fail with "Gloo connectFullMesh failed ... Connection refused" (about half of the restarts in
    tests/test_train_distributed.py failed so before this).
    TORCHELASTIC_RESTART_COUNT counts restarts of this node's worker group, so it is the same on
    every rank only when the whole job runs on this node; across nodes, launch torchrun with
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 instead (a fresh store per attempt).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    if _env_int("LOCAL_WORLD_SIZE", -1) != world_size:
        return None
    attempt = _env_int("TORCHELASTIC_RESTART_COUNT", 0)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], _env_int("MASTER_PORT", 0), world_size, is_master=False,
                          timeout=_TIMEOUT)
    return dist.PrefixStore(f"clearbg/attempt_{attempt}", store)


def setup_distributed(device: str | None = None) -> DistEnv:
    """Join the process group described by torchrun's environment, or run alone without one.

    Reads RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR / MASTER_PORT through ``env://``), as set
    by ``torchrun`` and by Spark's ``TorchDistributor``. With WORLD_SIZE unset or 1 no process
    group is created. The backend is gloo for CPU and NCCL for CUDA. Calling it again joins no
    second group (idempotent), so the loop and its callers may both call it; the device is resolved
    on every call, so in-process runs (Optuna trials, tests) may each pick their own.

    Args:
        device: "cpu", "cuda", "cuda:N", or None / "auto" (CUDA GPU ``local_rank`` if present,
            else CPU). A bare "cuda" picks the GPU of this process's local rank.

    Returns:
        The rank, world size, local rank and device of this process.

    Raises:
        ClearbgError: bad torchrun variables, MASTER_ADDR missing, or CUDA asked for without a GPU.

    Example:
        >>> env = setup_distributed("cpu")
        >>> env.world_size, env.is_main
        (1, True)
    """
    rank = _env_int("RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = _resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise ClearbgError(
                    f"WORLD_SIZE={world_size} but {name} is not set; launch with torchrun "
                    "(python -m torch.distributed.run --nproc_per_node N -m clearbg.train ...)"
                )
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        store = _restart_scoped_store(world_size)
        if store is None:
            dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                                    timeout=_TIMEOUT)
        else:
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size, timeout=_TIMEOUT)
    if dist.is_initialized():  # ours from an earlier call, or the caller's: trust it over the environment
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks in place and return it; the identity with one process.

    Use it for counts (true positives, pixels, images), then divide: the reduced IoU is then the
    IoU of all images, not a mean of per-rank means. Under NCCL a CPU tensor is moved to the GPU
    for the collective and copied back.

    Args:
        t: a tensor of the same shape and dtype on every rank.

    Returns:
        ``t`` itself, now holding the sum over ranks.

    Example:
        >>> all_reduce_sum(torch.tensor([3.0, 4.0]))  # one process: unchanged
        tensor([3., 4.])
    """
    if not _active():
        return t
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        on_gpu = t.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
        t.copy_(on_gpu)
        return t
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank; no-op alone.

    DDP broadcasts buffers at the start of each training forward, but the forward then updates
    them from the rank's own half of the batch, so after the last step the ranks' running
    statistics differ. Call this before validating or saving so that every rank evaluates the
    model rank 0 checkpoints.

    Example:
        >>> broadcast_buffers(model)  # after the last training step, before validation
    """
    if not _active():
        return
    for buffer in module.buffers():
        if dist.get_backend() == "nccl" and buffer.device.type != "cuda":
            on_gpu = buffer.to(torch.device("cuda", torch.cuda.current_device()))
            dist.broadcast(on_gpu, src)
            buffer.copy_(on_gpu)
        else:
            dist.broadcast(buffer, src)


def barrier() -> None:
    """Wait for every rank (no-op with one process)."""
    if _active():
        dist.barrier()


def is_main() -> bool:
    """True on rank 0 (or without a process group): the process that writes files and tracking."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return _env_int("RANK", 0) == 0


def cleanup() -> None:
    """Leave the process group (if any); safe to call twice."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- Spark
