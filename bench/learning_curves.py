"""Validation IoU by epoch for the champion runs, read back from their MLflow store.

One panel per domain; each line is a run (``a+b+c`` chains stages: each continues where the
previous ended, its own step 0 dropped since it re-measures the previous best); the dashed line
is step 0 of the first run, the official weights. Runs are looked up by name in the ``clearbg``
experiment (a finished run wins over an interrupted one of the same name).

Usage:
    python bench/learning_curves.py --tracking-uri sqlite:///runs/champion/mlflow.db \\
        --panel "fashion=fashion-u2netp+fashion-u2netp-stage2+fashion-u2netp-stage3" \\
        --panel "cars=cars-nocrop-e20,cars-caption-e10,cars-caption-e20,cars-caption-distill" \\
        --out bench/results/learning-curves.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow import MlflowClient  # noqa: E402


def run_id(client: MlflowClient, experiment: str, name: str) -> str:
    runs = client.search_runs([experiment], filter_string=f"tags.`mlflow.runName` = '{name}'")
    if not runs:
        raise SystemExit(f"no run named {name!r} in the store")
    runs.sort(key=lambda r: (r.info.status == "FINISHED", r.info.start_time), reverse=True)
    return runs[0].info.run_id


def curve(client: MlflowClient, experiment: str, chain: str) -> tuple[list[float], list[float], float]:
    """(epochs, val IoU, step-0 IoU) of a chain of runs ``a+b+c``."""
    xs, ys, start = [], [], None
    for i, name in enumerate(chain.split("+")):
        history = sorted(client.get_metric_history(run_id(client, experiment, name), "val/iou"), key=lambda m: m.step)
        offset = xs[-1] if xs else 0
        for m in history:
            if m.step == 0:
                start = m.value if start is None else start
                if i > 0:
                    continue
            xs.append(offset + m.step)
            ys.append(m.value)
    return xs, ys, start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--panel", action="append", required=True, help="DOMAIN=RUN[+STAGE...],RUN,... (repeatable)")
    parser.add_argument("--experiment", default="clearbg")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment).experiment_id
    panels = [item.split("=", 1) for item in args.panel]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
    for ax, (domain, chains) in zip(axes[0], panels):
        start = None
        for chain in chains.split(","):
            xs, ys, first = curve(client, experiment, chain)
            start = first if start is None else start
            best = max(range(len(ys)), key=ys.__getitem__)
            label = chain.replace("+", " → ")
            line, = ax.plot(xs, ys, marker=".", label=f"{label} (best {ys[best]:.4f})")
            ax.plot([xs[best]], [ys[best]], marker="*", markersize=12, color=line.get_color())
        if start is not None:
            ax.axhline(start, color="grey", linestyle="--", label=f"official weights ({start:.4f})")
        ax.set_title(f"{domain}: val IoU by epoch (full resolution)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean IoU, val split")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
