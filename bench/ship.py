"""Ship a trained model with clearbg: its weights and model card into ``clearbg/models/shipped/``.

Takes the promoted champion (``models:/NAME@champion``) or a checkpoint, writes its fp32 state
dict as ``<name>.pth`` and a model card ``<name>.json``: where it started, the data and their
licences, the exact training command, hardware, training time, how it was selected and its test
metrics (from ``bench/champions.py``'s cached evaluation). Prints the sha256 for the spec entry
in ``clearbg/models/specs.py``.

Usage:
    python bench/ship.py --model models:/fashion@champion --name u2netp-fashion \\
        --run runs/fashion-u2netp --test bench/results/champions/fashion-...parquet \\
        --command "clearbg train --config recipes/fashion-u2netp.yaml --data data/fashion-320" \\
        --data "../shared/data/fashion train split (490 photos; CCP, Apache-2.0)" \\
        --license "Apache-2.0 (base weights u2netp.official Apache-2.0; data CCP Apache-2.0)"
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

from clearbg.imageio import atomic_write_bytes
from clearbg.models.hub import resolve

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "clearbg" / "models" / "shipped"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def test_metrics(path: Path) -> dict[str, float]:
    t = pd.read_parquet(path)
    return {"images": int(len(t)), "mean IoU": round(float(t["iou"].mean()), 4),
            "median IoU": round(float(t["iou"].median()), 4),
            **{f">= {s}%": round(float((t["iou"] >= s / 100).mean()), 3) for s in (95, 97, 99)},
            "boundary F": round(float(t["boundary_f"].mean()), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="models:/NAME@champion or a checkpoint")
    parser.add_argument("--name", required=True, help="file stem in clearbg/models/shipped/")
    parser.add_argument("--run", type=Path, required=True, help="the training run folder (config.yaml, mlflow_run.json)")
    parser.add_argument("--test", type=Path, required=True, help="its cached test evaluation (bench/champions.py)")
    parser.add_argument("--command", required=True, help="the exact training command")
    parser.add_argument("--data", required=True, help="what it was trained on")
    parser.add_argument("--license", required=True)
    parser.add_argument("--hours", type=float, required=True, help="wall-clock training time")
    parser.add_argument("--hardware", help="where it trained (default: this machine's CPU)")
    parser.add_argument("--selected", required=True, help="how the checkpoint was chosen (val figures)")
    args = parser.parse_args()

    found = resolve(args.model)
    state = {k: v.float() if v.is_floating_point() else v for k, v in found.network.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    config = yaml.safe_load((args.run / "config.yaml").read_text())
    card = {
        "license": args.license,
        "base": f"{found.spec.name} ({config.get('init')})",
        "data": args.data,
        "command": args.command,
        "hardware": f"{args.hardware or cpu_name()}; precision {config.get('precision')}, torch {torch.__version__}",
        "time": f"{args.hours:.1f} h",
        "selected": args.selected,
        "test": test_metrics(args.test),
        "registered_as": args.model,
    }
    SHIPPED.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(SHIPPED / f"{args.name}.pth", payload)
    atomic_write_bytes(SHIPPED / f"{args.name}.json", (json.dumps(card, indent=2) + "\n").encode())
    print(f"{SHIPPED / args.name}.pth  {len(payload) / 1e6:.1f} MB  sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
