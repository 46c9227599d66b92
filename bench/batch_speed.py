"""``clearbg batch`` throughput and memory: images/s with 1 and 2 decode workers, RSS over the run.

The fashion photos are cycled (copied under new names) up to ``--images``, and each setup runs
``run_batch`` in its own process from an empty output folder (journal, outputs, results.parquet
included), so every number covers the whole job. RSS is sampled every 0.2 s; flat memory shows
as the median of the last fifth of samples staying near the median of the second fifth.

``--rembg`` adds what a rembg user runs for a folder, ``rembg p`` (rembg 2.0.86's own command
line from a private venv, ``bench/rembg_cli.py``), on the same photos and the same official
u2netp.onnx, timed from process start to exit (clearbg's rows exclude its ~1 s model load).
Beside each speed, the mean IoU of that run's cutouts of the first cycle (each distinct photo
once) against the human masks, alpha and mask at 128.

    python bench/batch_speed.py                      # 200 images, workers 1 and 2
    python bench/batch_speed.py --images 10000 --workers 2
    python bench/batch_speed.py --images 1000 --workers 2 --rembg
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion" / "images"
RESULTS = Path(__file__).resolve().parent / "results"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def make_source(folder: Path, n: int, photos: int) -> None:
    sources = sorted(DATA.glob("*.jpg"))[:photos]
    for i in range(n):
        src = sources[i % len(sources)]
        shutil.copyfile(src, folder / f"c{i // len(sources):03d}_{src.name}")


def mean_iou(out: Path, photos: int) -> float:
    """Mean IoU of the first cycle's cutouts (``c000_<id>.png``) against the human masks."""
    import numpy as np
    from PIL import Image

    scores = []
    for cutout in sorted(out.rglob("c000_*.png"))[:photos]:
        alpha = np.asarray(Image.open(cutout).convert("RGBA").getchannel("A")) >= 128
        truth = np.asarray(Image.open(DATA.parent / "masks" / cutout.name.removeprefix("c000_"))) >= 128
        union = (alpha | truth).sum()
        scores.append((alpha & truth).sum() / union if union else 1.0)
    if not scores:
        raise RuntimeError(f"no cutouts of the first cycle under {out}")
    return round(float(np.mean(scores)), 4)


def child(src: str, out: str, workers: int, batch_size: int) -> dict:
    from clearbg.batch import run_batch
    from clearbg.inference.predictor import Predictor

    predictor = Predictor("u2netp", batch_size=batch_size)
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_mib())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    summary = run_batch([src], out, predictor, workers=workers, progress=False)
    stop.set()
    sampler.join()
    fifth = max(1, len(samples) // 5)
    return {
        "images": summary.ok + summary.failed, "failed": summary.failed, "seconds": round(summary.seconds, 2),
        "images_per_s": round(summary.rate, 2), "peak_rss_mib": round(max(samples), 1),
        "rss_early_mib": round(statistics.median(samples[fifth : 2 * fifth]), 1),
        "rss_late_mib": round(statistics.median(samples[-fifth:]), 1),
    }


def rss_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_rembg(src: Path, out: Path) -> dict:
    """``rembg p SRC OUT`` with the official u2netp.onnx; wall time and sampled RSS."""
    from rembg_cli import rembg_executable

    from clearbg.models.download import cached_onnx
    from clearbg.models.specs import get_spec

    exe = rembg_executable()
    home = out.parent / "rembg-home"
    home.mkdir(exist_ok=True)
    model = home / "u2netp.onnx"
    shutil.copy(cached_onnx(get_spec("u2netp")), model)
    out.mkdir()
    env = dict(os.environ, U2NET_HOME=str(home))
    started = time.perf_counter()
    proc = subprocess.Popen([str(exe), "p", "-m", "u2net_custom", "-x", json.dumps({"model_path": str(model)}),
                             str(src), str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples = []
    while proc.poll() is None:
        samples.append(rss_of(proc.pid))
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(f"rembg p failed: {proc.stderr.read().decode()[-2000:]}")
    images = len(list(out.glob("*.png")))
    fifth = max(1, len(samples) // 5)
    return {
        "images": images, "failed": 0, "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 2),
        "peak_rss_mib": round(max(samples), 1), "rss_early_mib": round(statistics.median(samples[fifth : 2 * fifth]), 1),
        "rss_late_mib": round(statistics.median(samples[-fifth:]), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--photos", type=int, default=100, help="distinct fashion photos to cycle")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rembg", action="store_true", help="also run `rembg p` on the same photos")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        src, out, workers, batch = args.child
        print(json.dumps(child(src, out, int(workers), int(batch))))
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        make_source(src, args.images, args.photos)
        for workers in args.workers:
            out = Path(tmp) / f"out-{workers}"
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(src), str(out), str(workers), str(args.batch_size)],
                capture_output=True, text=True, check=True,
            )
            row = {"tool": "clearbg batch", "workers": workers, "batch_size": args.batch_size,
                   **json.loads(done.stdout.splitlines()[-1]), "mean_iou": mean_iou(out, args.photos)}
            print(row, flush=True)
            rows.append(row)
        if args.rembg:
            row = {"tool": "rembg p", "workers": 1, "batch_size": 1, **run_rembg(src, Path(tmp) / "out-rembg"),
                   "mean_iou": mean_iou(Path(tmp) / "out-rembg", args.photos)}
            print(row, flush=True)
            rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"batch-u2netp-cpu{os.cpu_count()}-n{args.images}{'-rembg' if args.rembg else ''}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0], "machine"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "machine": f"{platform.machine()} {os.cpu_count()} cores"})
    base = rows[0]["images_per_s"]
    print(f"\n{args.images} fashion photos (cycled), u2netp, {os.cpu_count()} cores")
    print("| tool | workers | img/s | ratio | mean IoU | peak RSS MiB | RSS 2nd fifth -> last fifth MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tool']} | {r['workers']} | {r['images_per_s']:.2f} | {r['images_per_s'] / base:.2f}x | {r['mean_iou']:.4f} | "
              f"{r['peak_rss_mib']:.0f} | {r['rss_early_mib']:.0f} -> {r['rss_late_mib']:.0f} |")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
