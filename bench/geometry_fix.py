"""What training on the predictor's geometry buys: fine-tune u2netp on padded squares (the old
`clearbg prepare` default) and on stretched ones (the predictor's, now the default), same
everything else, then score both best.pt at full resolution the way `clearbg evaluate` does.

    python bench/geometry_fix.py --epochs 1 --out /tmp/geometry

Prints a table and writes bench/results/geometry-fix-u2netp-<host>.csv. Each run is resumable
(rerun the same command after an interruption).
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path

import pandas as pd

from clearbg.data.prepare import PrepareConfig, prepare_dataset
from clearbg.evaluate.run import evaluate_model
from clearbg.evaluate.settings import EvalSettings
from clearbg.train.config import load_config
from clearbg.train.loop import train

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None, help="stop each run after this many steps")
    parser.add_argument("--splits", default="val,test", help="splits to score best.pt on with evaluate")
    parser.add_argument("--out", default="/tmp/clearbg-geometry")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = pd.read_csv(SHARED / "manifest.csv")
    for column in ("image", "mask"):
        pairs[column] = [str(SHARED / p) for p in pairs[column]]
    source = out / "pairs.csv"
    pairs.to_csv(source, index=False)
    rows = []
    for mode in ("pad", "stretch"):
        data = out / f"fashion-{mode}"
        prepare_dataset(str(source), str(data), PrepareConfig(sizes=[(320, 320)], resize=mode), workers=2)
        started = time.monotonic()
        config = load_config(overrides=[f"data={data}", f"out={out / 'runs'}", f"run_name=u2netp-{mode}",
                                        f"epochs={args.epochs}", "tracking_uri=off", "tensorboard=false",
                                        *([f"max_steps={args.max_steps}"] if args.max_steps else [])])
        result = train(config, progress=True)
        minutes = (time.monotonic() - started) / 60
        row = {"prepared": mode, "epochs": args.epochs, "steps": result.steps, "train_minutes": round(minutes, 1),
               "val_iou_step0": result.start_val_iou, "val_iou_best": result.best_val_iou}
        for split in args.splits.split(","):
            ev = evaluate_model(result.best_checkpoint, f"{data}:{split}", settings=EvalSettings(precision="fp32"),
                                progress=False)
            iou = ev.per_image["iou"]
            row[f"{split}_iou_mean"], row[f"{split}_share_95"] = float(iou.mean()), float((iou >= 0.95).mean())
        rows.append(row)
        print(row, flush=True)
    print("\n| prepared as | steps | val IoU step 0 | val IoU best (training) | " +
          " | ".join(f"{s} IoU (evaluate) | {s} >= 95 %" for s in args.splits.split(",")) + " |")
    for r in rows:
        scored = " | ".join(f"{r[s + '_iou_mean']:.4f} | {r[s + '_share_95']:.1%}" for s in args.splits.split(","))
        print(f"| {r['prepared']} | {r['steps']} | {r['val_iou_step0']:.4f} | {r['val_iou_best']:.4f} | {scored} |")
    target = Path(__file__).parent / "results" / f"geometry-fix-u2netp-{platform.node() or 'host'}.csv"
    target.parent.mkdir(exist_ok=True)
    with open(target, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwritten: {target}")


if __name__ == "__main__":
    main()
