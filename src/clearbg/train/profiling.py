"""``clearbg train --profile N``: where a training step's time goes.

For N steps (after one warm-up step, which pays for kernel selection and allocations) every
phase is timed with the clock — data loading (waiting for the next batch), forward (model and
loss), backward, optimizer (clipping, step, schedule) — and the PyTorch profiler records the
operators. The profiler's trace goes to ``RUN/tensorboard/profile/`` (TensorBoard's profiler
tab), and ``RUN/profile.txt`` holds the phase table and the top operators; both are logged to
MLflow. The seed trained Carvana with a profiler on; this makes that one flag.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

PHASES = ("data", "forward", "backward", "optimizer")


class StepProfiler:
    """Times the phases of ``steps`` training steps and records their operators.

    Use: ``phase(name)`` after each phase ends (it charges the time since the previous mark to
    ``name``), ``step_done()`` after each step. Inactive (all calls no-ops) when ``steps`` is 0.
    """

    def __init__(self, steps: int, run_dir: Path, device: torch.device):
        self.steps, self.run_dir, self.device = int(steps), Path(run_dir), device
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.done = 0
        self.skipped = 0  # warm-up steps not counted
        self._mark = time.perf_counter()
        self._profiler: torch.profiler.profile | None = None

    @property
    def active(self) -> bool:
        return self.steps > 0 and self.done < self.steps

    def phase(self, name: str) -> None:
        if not self.active:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # CUDA runs ahead of the clock
        now = time.perf_counter()
        if self.skipped:
            self.seconds[name] += now - self._mark
        self._mark = now

    def step_done(self) -> str | None:
        """Count a step; after the last profiled one, stop and return the summary text."""
        if not self.active:
            return None
        if not self.skipped:
            self.skipped = 1
            self._start()
            return None
        self.done += 1
        if self.done < self.steps:
            return None
        self._profiler.__exit__(None, None, None)
        return self._write()

    def _start(self) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        trace_dir = self.run_dir / "tensorboard" / "profile"
        self._profiler = torch.profiler.profile(
            activities=activities, record_shapes=False,
            on_trace_ready=torch.profiler.tensorboard_trace_handler(str(trace_dir)))
        self._profiler.__enter__()
        self._mark = time.perf_counter()

    def _write(self) -> str:
        total = sum(self.seconds.values()) or 1e-9
        lines = [f"clearbg train --profile: {self.done} steps after 1 warm-up step", "",
                 f"{'phase':<10} {'s/step':>8} {'share':>7}"]
        for name in PHASES:
            lines.append(f"{name:<10} {self.seconds[name] / self.done:8.3f} {self.seconds[name] / total:7.1%}")
        lines.append(f"{'total':<10} {total / self.done:8.3f}")
        sort_by = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        table = self._profiler.key_averages().table(sort_by=sort_by, row_limit=15)
        text = "\n".join(lines) + "\n\ntop operators (self time):\n" + table + "\n"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "profile.txt").write_text(text)
        return text
