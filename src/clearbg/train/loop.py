"""The one training function: ``train(config) -> TrainResult``.

The CLI (``clearbg train``), torchrun workers (``python -m clearbg.train``), Spark's
TorchDistributor and Optuna trials all call :func:`train`. It joins the process group itself
(``setup_distributed``: world size 1 without torchrun), so the same code trains on a laptop CPU,
one GPU or many.

One step: photos normalised as at inference (divided by their own maximum, then the model's
mean/std, as ``Predictor`` does), the model's logits for the fused map and every side output
under autocast, the deep-supervision loss in fp32 (``losses.py``), backward (through a
GradScaler for fp16), gradient-norm clipping, AdamW, then the learning-rate schedule (linear
warm-up, then cosine or reduce-on-plateau).

Precision: ``auto`` is bf16 autocast on CUDA GPUs that have it (fp16 + GradScaler otherwise),
and on CPUs with AMX bf16 tiles (Sapphire Rapids and later), where oneDNN runs the convolutions
and their gradients on the matrix units: measured 4x the images/s of fp32 channels-last for
u2netp at 320x320, batch 8, on this 2-core Xeon, with 35 % less peak memory
(``bench/train_speed.py``). Elsewhere on CPU it is fp32. The loss, BatchNorm statistics and
the AdamW master weights stay fp32 in every case.

Validation (every ``val_every`` epochs and after the last) thresholds the fused map at 0.5 and
adds up per-image pixel counts (``clearbg.evaluate.metrics``) over all ranks with
``all_reduce_sum``; IoU and Dice come from the summed counts, overall and per cluster when the
manifest has a ``cluster_name``/``cluster`` column. Only rank 0 writes checkpoints, the progress
bar and the tracker.

Official weights: the released U2-Net weights have BatchNorm folded into the convolutions
(identity BatchNorm layers). In training mode BatchNorm normalises with batch statistics, which
would turn that identity into a different function (IoU 0.93 -> 0.30 on the first batch, measured).
So before fine-tuning, each identity BatchNorm gets the statistics of its input on a few training
images as running stats *and* as its affine scale/shift: the eval-mode function is unchanged
and the training-mode one starts as (nearly) the official model.

Example:
    >>> from clearbg.train.config import load_config
    >>> result = train(load_config(overrides=["data=prepared/", "epochs=1"]))   # doctest: +SKIP
    >>> result.best_val_iou, result.best_checkpoint                             # doctest: +SKIP
    (0.93, 'runs/u2netp-prepared/checkpoints/best.pt')
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from clearbg.errors import ClearbgError
from clearbg.data.dataset import PairDataset
from clearbg.data.manifest import DatasetError
from clearbg.models.specs import get_spec
from clearbg.storage import is_remote
from clearbg.train.batch_size import find_batch_size
from clearbg.train.checkpoint import (
    capture_rng_state,
    checkpoint_paths,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from clearbg.train.config import TrainConfig
from clearbg.train.losses import DeepSupervisionLoss
from clearbg.train.model_init import calibrate_folded_batchnorm, init_model
from clearbg.train.profiling import StepProfiler
from clearbg.train.process_group import DistEnv, all_reduce_sum, barrier, broadcast_buffers, setup_distributed
from clearbg.train.samplers import ShardSampler
from clearbg.train.schedule import LRSchedule
from clearbg.train.validation import ValidationSet, validate

if TYPE_CHECKING:
    from clearbg.train.tracking import Tracker

__all__ = ["TrainResult", "resolve_precision", "run_dir_for", "train"]

log = logging.getLogger("clearbg.train")

CALIBRATION_IMAGES = 16  # training images used to give folded (identity) BatchNorm layers real statistics
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    """What a finished (or already complete) run produced.

    Attributes:
        run_dir: the run's folder (checkpoints/, tensorboard/, config.yaml).
        best_checkpoint: ``best.pt`` (weights of the epoch with the best val IoU), or None
            without a validation split.
        last_checkpoint: ``latest.pt`` (full state, resumable).
        best_val_iou: the best validation IoU, or None without validation: the mean per-image
            IoU at full resolution on the original val photos, what ``clearbg evaluate`` reports.
        start_val_iou: the validation IoU of the initial weights (step 0), when they were
            pretrained; a run that ends below it made the model worse.
        metrics: the last epoch's metrics (``train/loss``, ``val/iou``, ``val/iou/<cluster>``, ...).
        steps: optimizer steps done in total (all epochs, across resumes).
        epochs: epochs completed.
        images_per_second: training images/s of this invocation, all ranks together, data
            loading included; the first step (kernel selection, allocations) is not counted,
            nor are validation and checkpoint writes (0 if it trained fewer than 2 steps).
    """

    run_dir: str
    best_checkpoint: str | None
    last_checkpoint: str | None
    best_val_iou: float | None
    metrics: dict[str, float]
    steps: int
    epochs: int
    images_per_second: float
    start_val_iou: float | None = None


# --------------------------------------------------------------------------- small pieces


def _train_mode(model: nn.Module, *, freeze_bn: bool) -> None:
    """Training mode; with ``freeze_bn`` every BatchNorm keeps normalising with its running
    statistics (eval mode) while its scale and shift still learn: a small fine-tuning set with
    heavy augmentation would otherwise pull the statistics away from real photos."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _warn_if_worse(pos: _Position, metrics: dict[str, float], config: TrainConfig) -> None:
    """Say loudly when fine-tuning ended below where the pretrained weights started."""
    final = metrics.get("val/iou")
    if pos.start_iou is None or final is None or final >= pos.start_iou:
        return
    best = f"; best.pt (epoch {pos.best_epoch}) is at {pos.best_iou:.4f}" if pos.best_iou is not None else ""
    log.warning(
        "WARNING: validation IoU ended at %.4f, BELOW the %.4f the %s weights had at step 0%s. "
        "Fine-tuning made the model worse: lower the learning rate (lr=%g now; --set lr=3e-5), lengthen the "
        "warm-up (--set warmup_steps=...), or train longer on more data.",
        final, pos.start_iou, config.init, best, config.peak_lr)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run uses: ``auto`` resolved for the device, others checked.

    Raises:
        ClearbgError: fp16 on CPU (no fast fp16 kernels there), bf16 on a GPU without it.
    """
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        # Measured faster only with AMX (see the module docstring); AVX512-BF16 alone is untested.
        return "bf16" if torch.cpu._is_amx_tile_supported() and torch.cpu._is_avx512_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ClearbgError("precision=fp16 needs a CUDA GPU; on CPU use fp32 or bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ClearbgError("this GPU has no bf16; use precision=fp16 (with a grad scaler) or fp32")
    return precision


def run_dir_for(config: TrainConfig) -> Path:
    """``<out>/<run_name>``; the default name ``<model arch>-<dataset folder>`` is stable, so
    rerunning the same command (or a torchrun restart) finds the run and resumes it.

    Example:
        >>> run_dir_for(TrainConfig(data="data/fashion-320/", out="runs"))
        PosixPath('runs/u2netp-fashion-320')
    """

    if is_remote(str(config.out)):
        raise ClearbgError(f"out={config.out!r}: runs are written to a local folder; copy them to object storage afterwards")
    name = config.run_name or f"{config.model.split('.')[0]}-{str(config.data).rstrip('/').rsplit('/', 1)[-1]}"
    return Path(config.out) / name


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _cluster_labels(frame) -> tuple[str | None, list[Any]]:
    for column in ("cluster_name", "cluster"):
        if column in frame.columns and frame[column].notna().all():
            return column, list(frame[column])
    return None, []


# --------------------------------------------------------------------------- validation


def _preview_grid(preview: dict[str, np.ndarray]) -> np.ndarray | None:
    """Rows of photo | truth | prediction (white = product), 4 px gaps: for MLflow/TensorBoard."""
    if not preview:
        return None
    rows = []
    for photo, truth, pred in zip(preview["photo"], preview["truth"], preview["pred"]):
        h = photo.shape[0]
        gap = np.full((h, 4, 3), 40, np.uint8)
        as_rgb = [np.repeat((m * 255).astype(np.uint8)[:, :, None], 3, 2) for m in (truth, pred)]
        rows.append(np.concatenate([photo, gap, as_rgb[0], gap, as_rgb[1]], 1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 40, np.uint8))
    return np.concatenate(rows[:-1], 0)


# --------------------------------------------------------------------------- the run


@dataclass
class _Position:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0  # current epoch (0-based); == epochs when the run is complete
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps done in total
    loss_sum: float = 0.0  # sum over this epoch's images so far of the per-image train loss (this rank)
    images: int = 0  # images seen this epoch (this rank)
    best_iou: float | None = None
    best_epoch: int | None = None
    start_iou: float | None = None  # val IoU of the initial (pretrained) weights, at step 0
    history: list[dict[str, float]] = field(default_factory=list)
    batch_size: int = 0  # resolved batch size (``auto`` is searched once, then kept)


def train(
    config: TrainConfig,
    *,
    tracker: Tracker | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``config.data``; resume, validate, checkpoint and track it.

    Args:
        config: the run (see ``TrainConfig``).
        tracker: a ``Tracker`` to log to (Optuna passes a child run); default: a new one for
            ``config``. ``train`` starts it and always ends it: FINISHED, KILLED when
            ``on_epoch_end`` raised ``optuna.TrialPruned`` or on Ctrl-C, FAILED otherwise.
        on_epoch_end: ``fn(epoch, metrics)`` after each epoch (1-based epoch; the all-reduced
            metrics of that epoch), on every rank; it may raise (e.g. ``optuna.TrialPruned``)
            to stop the run, and the exception propagates.
        progress: show the tqdm bar (rank 0); None: only when stderr is a terminal.

    Returns:
        ``TrainResult``.

    Raises:
        ClearbgError: bad data, model, weights, checkpoint or device (the message says which).

    Example:
        >>> result = train(load_config(overrides=["data=prepared/", "epochs=2", "init=scratch"]))  # doctest: +SKIP
    """
    env = setup_distributed(config.device)
    run = _Run(config, env, progress)
    if tracker is None:
        from clearbg.train.tracking import Tracker

        tracker = Tracker(config, run.run_dir, enabled=env.is_main)
    status = "FAILED"
    try:
        result = run.execute(tracker, on_epoch_end)
        status = "FINISHED"
        return result
    except BaseException as err:
        if type(err).__name__ == "TrialPruned" or isinstance(err, KeyboardInterrupt):
            status = "KILLED"
        raise
    finally:
        tracker.end(status)


class _Run:
    """One invocation of ``train``: set-up, the epoch loop, checkpoints. Private on purpose:
    everything a caller needs goes through ``train`` and ``TrainResult``."""

    def __init__(self, config: TrainConfig, env: DistEnv, progress: bool | None):

        self.config, self.env = config, env
        self.device = env.device
        self.precision = resolve_precision(config.precision, self.device)
        self.amp_dtype = _AMP_DTYPES.get(self.precision)
        self.run_dir = run_dir_for(config)
        self.latest_path, self.best_path = checkpoint_paths(self.run_dir)
        self.spec = get_spec(config.model)
        self.show = env.is_main and (sys.stderr.isatty() if progress is None else progress)
        self.preprocess = self.spec.preprocess
        if config.size != self.spec.input_size and env.is_main:
            # Validation and every prediction resize photos to the spec's size, so a model
            # trained at another size meets its products at another scale in use.
            log.warning("training %s at %d px, but it predicts at %d px (its input size): use --size %d "
                        "to train at the scale it is used at", self.spec.name, config.size,
                        self.spec.input_size, self.spec.input_size)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels

    # ----------------------------------------------------------------- set-up

    def _datasets(self) -> None:

        c = self.config
        self.train_ds = PairDataset(c.data, split="train", size=c.size, augment=c.augment, seed=c.seed)
        if c.distill.teacher:
            self.train_ds = PairDataset(c.data, split="train", size=c.size, augment=c.augment, seed=c.seed,
                                        masks=self._teacher_targets())
        try:
            self.val_ds: PairDataset | None = PairDataset(c.data, split="val", size=c.size, augment=None, seed=c.seed)
        except DatasetError:
            self.val_ds = None
            if self.env.is_main:
                log.warning("no 'val' rows in %s: training without validation (best.pt is not written)", c.data)
        weights = None
        if c.balance is not None:
            from clearbg.data.balance import cluster_weights

            column, labels = _cluster_labels(self.train_ds.frame)
            if column is None:
                raise ClearbgError(f"balance is set but the manifest of {c.data} has no cluster column; run `clearbg cluster {c.data}`")
            weights = cluster_weights(labels, c.balance)
        self.train_sampler = ShardSampler(len(self.train_ds), c.seed, self.env.rank, self.env.world_size, weights)
        self.val: ValidationSet | None = None
        if self.val_ds is not None:
            try:
                self.val = ValidationSet(c.data)
            except DatasetError as err:
                self.val_ds = None
                if self.env.is_main:
                    log.warning("cannot validate on the original val photos (%s): training without validation", err)

    def _teacher_targets(self) -> dict[str, str]:
        """The distillation targets: rank 0 computes the missing ones, every rank reads them."""
        from clearbg.train.distill import teacher_folder, teacher_targets

        if self.env.is_main:
            paths = teacher_targets(self.train_ds, self.config.distill, self.run_dir, str(self.device),
                                    progress=self.show)
        barrier()
        if not self.env.is_main:
            folder = teacher_folder(self.run_dir, self.config.distill)
            paths = {pair_id: str(folder / f"{pair_id}.png") for pair_id in self.train_ds.ids}
        return paths

    def _loader(self, dataset, sampler, batch_size: int, generator_seed: int) -> torch.utils.data.DataLoader:
        workers = self.config.workers
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
            pin_memory=self.device.type == "cuda", drop_last=False,
            prefetch_factor=2 if workers else None,
            # Its own generator: creating a loader must not consume the global torch RNG, or a
            # resumed run (which creates one more loader) would drift from an uninterrupted one.
            generator=torch.Generator().manual_seed(generator_seed),
        )

    def _calibration_batches(self, batch_size: int) -> list[torch.Tensor]:

        plain = PairDataset(self.config.data, split="train", size=self.config.size, augment=None, seed=self.config.seed)
        n = min(len(plain), CALIBRATION_IMAGES)
        batches = []
        for start in range(0, n, batch_size):
            images = torch.stack([plain[i]["image"] for i in range(start, min(n, start + batch_size))])
            batches.append(self.preprocess.normalise(images.to(self.device)))
        return batches

    def _resume_source(self) -> Path | None:
        resume = self.config.resume
        if resume == "never":
            return None
        if resume == "auto":
            return self.latest_path if self.latest_path.is_file() else None
        return Path(resume)

    def _resolve_batch_size(self, model: nn.Module, loss_fn: DeepSupervisionLoss) -> int:
        if self.config.batch_size != "auto":
            return int(self.config.batch_size)

        def step_fn(m, images, masks):
            return loss_fn(m(images, logits=True), masks)[0]

        found = find_batch_size(model, self.config.size, self.device, precision=self.precision,
                                channels_last=self.config.channels_last, step_fn=step_fn)
        if self.env.distributed:  # every rank must use the same size: take the smallest
            import torch.distributed as dist

            t = torch.tensor([found], device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
            found = int(t.item())
        if self.env.is_main:
            log.info("batch_size=auto: %d fits at %dx%d (%s)", found, self.config.size, self.config.size, self.precision)
        return found

    # ----------------------------------------------------------------- the loop

    def execute(self, tracker: Tracker, on_epoch_end) -> TrainResult:
        c, env = self.config, self.env
        random.seed(c.seed)
        np.random.seed(c.seed)
        self._datasets()
        loss_fn = DeepSupervisionLoss(c.loss)
        source = self._resume_source()
        checkpoint = load_checkpoint(source) if source is not None else None
        pos = _Position()
        model = self.spec.builder() if checkpoint is not None else init_model(c, self.spec)
        model.to(self.device)
        if checkpoint is not None:
            _check_resume_config(checkpoint.get("config", {}), c, source, env.is_main)
            from clearbg.models.weights import load_state_dict_strict

            load_state_dict_strict(model, checkpoint["model"], str(source))
            pos = _Position(**checkpoint["position"])
        if pos.batch_size == 0:
            pos.batch_size = self._resolve_batch_size(model, loss_fn)
        if checkpoint is None and c.init != "scratch":
            calibrated = calibrate_folded_batchnorm(model, self._calibration_batches(pos.batch_size))
            if calibrated and env.is_main:
                log.info("gave %d folded BatchNorm layers the statistics of %d training images", calibrated,
                         min(len(self.train_ds), CALIBRATION_IMAGES))
        if c.channels_last:
            model.to(memory_format=torch.channels_last)
        net: nn.Module = model
        if env.distributed:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)

        steps_per_epoch = math.ceil(self.train_sampler.per_rank / pos.batch_size)
        total_steps = c.epochs * steps_per_epoch if c.max_steps is None else min(c.max_steps, c.epochs * steps_per_epoch)
        optimizer = _make_optimizer(model, c, self.device)
        schedule = LRSchedule(optimizer, c.scheduler, c.peak_lr, c.warmup_steps, total_steps)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        if checkpoint is not None:
            optimizer.load_state_dict(checkpoint["optimizer"])
            schedule.load_state_dict(checkpoint["schedule"])
            scaler.load_state_dict(checkpoint["scaler"])
            restore_rng_state(checkpoint["rng"])
        del checkpoint

        params = {**c.to_dict(), "resolved": {"lr": c.peak_lr, "batch_size": pos.batch_size, "precision": self.precision,
                                              "world_size": env.world_size, "device": str(self.device),
                                              "steps_per_epoch": steps_per_epoch, "total_steps": total_steps}}
        if env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(c.to_yaml())
            where = f"resuming {source} at epoch {pos.epoch + 1}, batch {pos.batch}" if source else "new run"
            log.info("%s: %s on %s (%s, batch %d x %d process(es)), %s", self.run_dir, self.spec.name,
                     self.device, self.precision, pos.batch_size, env.world_size, where)
        tracker.start(params, resuming=source is not None)
        if source is None and self.val is not None and c.init != "scratch":
            start, _ = self._validate(model)  # what fine-tuning has to beat
            pos.start_iou = start["iou"]
            tracker.log_metrics({f"val/{k}": v for k, v in start.items()}, 0)
            if env.is_main:
                log.info("step 0 (%s weights): val IoU %.4f", c.init, pos.start_iou)

        state = dict(model=model, optimizer=optimizer, schedule=schedule, scaler=scaler)
        profiler = StepProfiler(c.profile if env.is_main else 0, self.run_dir, self.device)
        # Throughput counts every step but the first of this invocation (one-time kernel selection
        # and allocations), data loading included; validation and checkpoint writes are excluded.
        timed_images, timed_seconds, warm = 0, 0.0, False
        metrics: dict[str, float] = pos.history[-1] if pos.history else {}
        finished = pos.epoch >= c.epochs or (c.max_steps is not None and pos.step >= c.max_steps)
        while not finished:
            epoch = pos.epoch
            self.train_ds.set_epoch(epoch)
            self.train_sampler.set_epoch(epoch, skip=pos.batch * pos.batch_size)
            loader = self._loader(self.train_ds, self.train_sampler, pos.batch_size, c.seed * 1000003 + epoch)
            bar = self._bar(epoch, steps_per_epoch, pos.batch)
            _train_mode(net, freeze_bn=c.freeze_bn)
            stop_early = False
            tick = time.perf_counter()
            for batch in loader:
                profiler.phase("data")
                images = batch["image"].to(self.device, non_blocking=True)
                masks = batch["mask"].to(self.device, non_blocking=True)
                x = self.preprocess.normalise(images)
                if c.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                    outputs = net(x, logits=True)
                loss, _ = loss_fn(outputs, masks)
                profiler.phase("forward")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                profiler.phase("backward")
                if c.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                schedule.step()
                n = len(images)
                pos.loss_sum += float(loss.detach()) * n  # .item() syncs: also makes the timing honest on GPU
                pos.images += n
                pos.batch += 1
                pos.step += 1
                profiler.phase("optimizer")
                profiled = profiler.step_done()
                if profiled is not None:
                    log.info("%s", profiled)
                    tracker.log_artifact(self.run_dir / "profile.txt")
                now = time.perf_counter()
                if warm:
                    timed_images, timed_seconds = timed_images + n, timed_seconds + now - tick
                warm, tick = True, now
                rate = timed_images * env.world_size / timed_seconds if timed_seconds else 0.0
                if bar is not None:
                    bar.set_postfix_str(self._postfix(pos.loss_sum / pos.images, metrics.get("val/iou"), rate), refresh=False)
                    bar.update(1)
                if c.max_steps is not None and pos.step >= c.max_steps:
                    stop_early = True
                    break
                if c.checkpoint_every and pos.step % c.checkpoint_every == 0 and pos.batch < steps_per_epoch:
                    self._save(self.latest_path, state, pos)
                    tick = time.perf_counter()
            if bar is not None:
                bar.close()

            # ---- end of epoch (or of the run): reduce, validate, record, checkpoint
            broadcast_buffers(model)  # every rank validates the BatchNorm statistics rank 0 saves
            sums = torch.tensor([pos.loss_sum, float(pos.images)], dtype=torch.float64)
            all_reduce_sum(sums)
            metrics = {"train/loss": float(sums[0] / max(sums[1], 1)), "train/lr": schedule.current,
                       "speed/images_per_s": timed_images * env.world_size / timed_seconds if timed_seconds else 0.0}
            last = stop_early or epoch + 1 >= c.epochs
            if self.val_ds is not None and (last or (c.val_every and (epoch + 1) % c.val_every == 0)):
                val, preview = self._validate(model)
                metrics.update({f"val/{k}": v for k, v in val.items()})
                schedule.observe(val["iou"])
                if pos.best_iou is None or val["iou"] > pos.best_iou:
                    pos.best_iou, pos.best_epoch = val["iou"], epoch + 1
                    metrics["val/best_iou"] = val["iou"]
                    if env.is_main:
                        self._save_best(model, pos, metrics)
                grid = _preview_grid(preview) if env.is_main else None
                if grid is not None:
                    tracker.log_image("val/predictions", grid, epoch + 1)
            pos.history.append(metrics)
            if pos.batch >= steps_per_epoch:  # a whole epoch done (max_steps may stop one mid-way:
                # then the position stays mid-epoch, so raising max_steps later continues exactly)
                pos.epoch, pos.batch, pos.loss_sum, pos.images = epoch + 1, 0, 0.0, 0
            finished = last
            tracker.log_metrics(metrics, epoch + 1)
            if env.is_main:
                self._report(epoch, metrics, pos)
            self._save(self.latest_path, state, pos)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, metrics)
        barrier()
        _warn_if_worse(pos, metrics, c)
        if env.is_main and warm:  # this invocation trained: log the final model
            tracker.log_model(model)
        return TrainResult(
            run_dir=str(self.run_dir),
            best_checkpoint=str(self.best_path) if self.best_path.is_file() else None,
            last_checkpoint=str(self.latest_path) if self.latest_path.is_file() else None,
            best_val_iou=pos.best_iou,
            start_val_iou=pos.start_iou,
            metrics=dict(metrics),
            steps=pos.step,
            epochs=pos.epoch,
            images_per_second=timed_images * env.world_size / timed_seconds if timed_seconds else 0.0,
        )

    # ----------------------------------------------------------------- helpers

    def _validate(self, model: nn.Module) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        metrics = validate(model, self.spec, self.val, self.device, rank=self.env.rank, world=self.env.world_size)
        preview = self._preview(model) if self.env.is_main else {}
        _train_mode(model, freeze_bn=self.config.freeze_bn)
        return metrics, preview

    @torch.no_grad()
    def _preview(self, model: nn.Module) -> dict[str, np.ndarray]:
        """A few val photos at the training size: photo, truth and prediction, for a grid."""
        batch = [self.val_ds[i] for i in range(min(4, len(self.val_ds)))]
        images = torch.stack([b["image"] for b in batch]).to(self.device)
        model.eval()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            logits = model(self.preprocess.normalise(images), fused_only=True, logits=True)
        return {
            "photo": (images.float().cpu().permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8),
            "truth": torch.stack([b["mask"][0] for b in batch]).numpy() > 0.5,
            "pred": logits[:, 0].float().cpu().numpy() > 0,
        }

    def _save(self, path: Path, state: dict[str, Any], pos: _Position) -> None:
        if not self.env.is_main:
            return
        model = state["model"]
        save_checkpoint(path, {
            "model": model.state_dict(),
            "model_name": self.spec.name,
            "optimizer": state["optimizer"].state_dict(),
            "schedule": state["schedule"].state_dict(),
            "scaler": state["scaler"].state_dict(),
            "rng": capture_rng_state(),
            "position": dataclasses.asdict(pos),
            "config": self.config.to_dict(),
        })

    def _save_best(self, model: nn.Module, pos: _Position, metrics: dict[str, float]) -> None:
        save_checkpoint(self.best_path, {
            "model": model.state_dict(),
            "model_name": self.spec.name,
            "epoch": pos.epoch + 1,
            "step": pos.step,
            "metrics": dict(metrics),
            "config": self.config.to_dict(),
        })

    def _bar(self, epoch: int, total: int, initial: int):
        if not self.show:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="step",
                    dynamic_ncols=True, leave=False, file=sys.stderr)

    @staticmethod
    def _postfix(loss: float, iou: float | None, rate: float) -> str:
        iou_text = f"{iou:.3f}" if iou is not None else "-"
        rate_text = f"{rate:.1f}" if rate > 0 else "-"  # the first step is not timed (warm-up)
        return f"loss={loss:.4f} iou={iou_text} {rate_text} img/s"

    def _report(self, epoch: int, metrics: dict[str, float], pos: _Position) -> None:
        parts = [f"epoch {epoch + 1}/{self.config.epochs}", f"step {pos.step}", f"loss {metrics['train/loss']:.4f}",
                 f"lr {metrics['train/lr']:.2e}"]
        if "val/iou" in metrics:
            parts.append(f"val IoU {metrics['val/iou']:.4f} Dice {metrics['val/dice']:.4f}")
            if "val/best_iou" in metrics:
                parts.append("(best)")
        parts.append(f"{metrics['speed/images_per_s']:.1f} img/s")
        line = "  ".join(parts)
        if self.show:
            from tqdm.auto import tqdm

            tqdm.write(line, file=sys.stderr)
        else:
            log.info(line)


def _make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and BatchNorm parameters (decaying them only hurts)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for the whole update instead of a dozen ops per tensor (CPU and CUDA).
    return torch.optim.AdamW(groups, lr=config.peak_lr, fused=device.type in ("cpu", "cuda"))


_RESUME_MUST_MATCH = ("model", "size", "data", "seed")


def _check_resume_config(saved: dict[str, Any], config: TrainConfig, source: Path, main: bool) -> None:
    """Refuse a resume that cannot be exact (other model, data, size or seed); note other changes."""
    current = config.to_dict()
    for key in _RESUME_MUST_MATCH:
        if key in saved and saved[key] != current[key]:
            raise ClearbgError(
                f"cannot resume {source}: it was trained with {key}={saved[key]!r}, this run has {key}={current[key]!r}; "
                "use another run_name, or resume=never to start over"
            )
    changed = sorted(k for k in current if k in saved and saved[k] != current[k] and k != "resume")
    if changed and main:
        log.warning("resuming %s with changed settings: %s", source,
                    ", ".join(f"{k}: {saved[k]!r} -> {current[k]!r}" for k in changed))
