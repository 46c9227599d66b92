"""The learning-rate schedule: warm-up, then cosine, reduce-on-plateau or constant; resumable."""

from __future__ import annotations

import math
from typing import Any

import torch


class LRSchedule:
    """Learning rate per step: linear warm-up from ``lr/100``, then cosine to ``lr/100``,
    reduce-on-plateau (halve after ``patience`` validations without a better IoU), or constant.

    The warm-up is capped at a tenth of the run so short runs still reach the peak rate.
    Call ``step()`` after every optimizer step and ``observe(val_iou)`` after each validation.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, lr: float, warmup_steps: int,
                 total_steps: int, patience: int = 2, factor: float = 0.5):
        self.optimizer, self.kind, self.lr = optimizer, kind, float(lr)
        self.total = max(1, int(total_steps))
        self.warmup = min(int(warmup_steps), self.total // 10)
        self.patience, self.factor = patience, factor
        self.steps = 0
        self.scale = 1.0  # plateau reductions so far
        self.best: float | None = None
        self.bad = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        floor = self.lr / 100
        if step < self.warmup:
            return floor + (self.lr - floor) * step / self.warmup
        if self.kind == "cosine":
            t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
            return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * t))
        return self.lr * self.scale

    def step(self) -> None:
        self.steps += 1
        self._apply()

    def observe(self, metric: float) -> None:
        if self.kind != "plateau":
            return
        if self.best is None or metric > self.best + 1e-4:
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                self.scale *= self.factor
                self.bad = 0
        self._apply()

    @property
    def current(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _apply(self) -> None:
        lr = self.lr_at(self.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.scale, self.best, self.bad = state["steps"], state["scale"], state["best"], state["bad"]
        self._apply()
