"""Engine speed and quality: clearbg's PyTorch path against ONNX Runtime fp32 / int8 / fp16.

Everything runs in this one process, one setup after the other, through ``Predictor.predict``
(photo in -> probability map at the photo's full resolution out; no compositing, no disk
writes). u2netp is exported once into a temporary folder; int8 is calibrated on train-split
photos, never on the measured test-split ones. Each setup gets a warm-up, then ``--passes``
timed passes at batch 1 (one photo per call) and batched (``--batch`` photos per call); the
table quotes medians, ratios against the PyTorch default and IoU against the ground truth
(threshold 0.5). The machine is shared, so compare the ratios of one run.

    python bench/onnx_speed.py                       # 50 fashion photos
    python bench/onnx_speed.py --n 20 --setups torch,ort-fp32,ort-int8
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion"
SETUPS = {
    "torch": "PyTorch, clearbg default (bf16 where native)",
    "torch-fp32": "PyTorch fp32",
    "ort-fp32": "ONNX Runtime fp32",
    "ort-int8": "ONNX Runtime int8 (static QDQ)",
    "ort-fp16": "ONNX Runtime fp16 (CPU provider)",
}


def rows(split: str) -> list[dict]:
    with open(DATA / "manifest.csv", newline="") as f:
        return sorted((r for r in csv.DictReader(f) if r["split"] == split), key=lambda r: r["id"])


def iou(prob: np.ndarray, truth: np.ndarray) -> float:
    pred, gt = prob >= 0.5, truth >= 128
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


def export_variants(folder: Path, calibration: int) -> dict[str, Path]:
    """u2netp as fp32, fp16 and int8 ONNX files (dynamic batch)."""
    from clearbg.inference.onnx_export import export_file

    photos = [Image.open(DATA / r["image"]).convert("RGB") for r in rows("train")[:calibration]]
    paths = {}
    for variant in ("fp32", "fp16", "int8"):
        start = time.perf_counter()
        paths[variant] = export_file("u2netp", folder / f"u2netp-{variant}.onnx", dynamic_batch=True,
                                     precision=variant, calibration=photos)
        print(f"exported {variant} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return paths


def predictor_for(setup: str, files: dict[str, Path], batch: int):
    from clearbg.inference.predictor import Predictor

    if setup == "torch":
        return Predictor("u2netp", device="cpu", batch_size=batch, engine="torch")
    if setup == "torch-fp32":
        return Predictor("u2netp", device="cpu", precision="fp32", batch_size=batch, engine="torch")
    return Predictor(files[setup.split("-")[1]], batch_size=batch, engine="onnxruntime")


def measure(predictor, photos: list[Image.Image], batch: int, passes: int) -> tuple[float, list[np.ndarray]]:
    """Median images/s over ``passes`` after one warm-up pass; the last pass's maps."""

    def one_pass() -> list[np.ndarray]:
        out = []
        for i in range(0, len(photos), batch):
            out += predictor.predict(photos[i : i + batch])
        return out

    maps = one_pass()
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        maps = one_pass()
        rates.append(len(photos) / (time.perf_counter() - start))
    return statistics.median(rates), maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50, help="test-split fashion photos")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=16, help="train-split photos for int8")
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated subset of " + ",".join(SETUPS))
    args = parser.parse_args()

    test = rows("test")[: args.n]
    photos = [Image.open(DATA / r["image"]).convert("RGB") for r in test]
    truths = [np.asarray(Image.open(DATA / r["mask"]).convert("L")) for r in test]
    results = []
    with tempfile.TemporaryDirectory(prefix="clearbg-onnx-bench-") as tmp:
        files = export_variants(Path(tmp), args.calibration)
        for setup in args.setups.split(","):
            row = {"setup": setup}
            for batch in (1, args.batch):
                print(f"running {setup} batch {batch} ...", file=sys.stderr, flush=True)
                rate, maps = measure(predictor_for(setup, files, batch), photos, batch, args.passes)
                row[f"images_per_s_b{batch}"] = rate
            row["mean_iou"] = float(np.mean([iou(m, t) for m, t in zip(maps, truths)]))
            row["file_mb"] = files[setup.split("-")[1]].stat().st_size / 1e6 if setup.startswith("ort") else None
            results.append(row)

    base = results[0]
    b1, bn = "images_per_s_b1", f"images_per_s_b{args.batch}"
    cpu = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    print(f"\nu2netp, {len(photos)} test fashion photos, {cpu}; median of {args.passes} passes; "
          f"ratios vs {base['setup']}\n")
    header = (f"| {'setup':45s} | img/s b1 | ratio | img/s b{args.batch} | ratio | mean IoU | "
              f"IoU - {base['setup']:5s} | file MB |")
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for r in results:
        size = f"{r['file_mb']:7.1f}" if r["file_mb"] else "      -"
        print(f"| {SETUPS[r['setup']]:45s} | {r[b1]:8.2f} | {r[b1] / base[b1]:4.2f}x | {r[bn]:8.2f} | "
              f"{r[bn] / base[bn]:4.2f}x | {r['mean_iou']:8.4f} | {r['mean_iou'] - base['mean_iou']:+11.4f} | {size} |")
    out = Path(__file__).parent / "results" / f"onnx-u2netp-cpu{os.cpu_count()}.csv"
    out.parent.mkdir(exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["setup", b1, bn, "mean_iou", "file_mb"])
        writer.writeheader()
        writer.writerows(results)
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
