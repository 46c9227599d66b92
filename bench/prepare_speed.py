"""Dataset preparation speed: pairs/s on this machine, from a local folder and from S3.

Each setup prepares the same fashion pairs (photo JPEG ~550x830 + mask PNG) into 320x320
training pairs. ``plain-loop`` is what a training script usually does instead (as the official
U-2-Net data loader does per epoch): decode, resize, save, one pair at a time, no checks.
``clearbg`` also runs every cleaning check (decode checks, mask binarisation, hashes, edge
alignment) and writes the manifest, journal and report. S3 runs against a moto_server on
127.0.0.1 started here. Each setup runs ``--repeats`` times into a fresh folder; the table
quotes the median (the machine is shared: compare ratios).

    python bench/prepare_speed.py              # 200 pairs, 2 workers
    python bench/prepare_speed.py --pairs 700 --repeats 1
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion"


def pairs(n: int) -> list[tuple[str, Path, Path]]:
    with open(DATA / "manifest.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["id"])[:n]
    return [(r["id"], DATA / r["image"], DATA / r["mask"]) for r in rows]


def plain_loop(items, out: Path) -> None:
    for pair_id, image, mask in items:
        photo = Image.open(image).convert("RGB").resize((320, 320), Image.Resampling.BILINEAR)
        label = Image.open(mask).convert("L").resize((320, 320), Image.Resampling.NEAREST)
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "masks").mkdir(parents=True, exist_ok=True)
        photo.save(out / "images" / f"{pair_id}.png")
        label.save(out / "masks" / f"{pair_id}.png")


def make_source(items, root: Path) -> None:
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for pair_id, image, mask in items:
        shutil.copy(image, root / "images" / f"{pair_id}.jpg")
        shutil.copy(mask, root / "masks" / f"{pair_id}.png")


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([server if os.path.exists(server) else "moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.05)
    return proc, endpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    moto, endpoint = start_moto()
    os.environ["CLEARBG_S3_ENDPOINT_URL"] = endpoint
    from clearbg.data.prepare import PrepareConfig, prepare_dataset
    from clearbg.storage import get_filesystem

    items = pairs(args.pairs)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "source"
        make_source(items, source)
        fs, _ = get_filesystem("s3://bench")
        fs.mkdir("bench")
        fs.put(str(source) + "/", "bench/source/", recursive=True)

        setups = {
            "plain-loop": lambda out: plain_loop(items, out),
            f"clearbg-local-w{args.workers}": lambda out: prepare_dataset(str(source), str(out), PrepareConfig(), workers=args.workers, progress=False),
            "clearbg-local-w1": lambda out: prepare_dataset(str(source), str(out), PrepareConfig(), workers=1, progress=False),
            f"clearbg-s3-w{args.workers}": lambda out: prepare_dataset("s3://bench/source", str(out), PrepareConfig(), workers=args.workers, progress=False),
        }
        for name, run in setups.items():
            for repeat in range(args.repeats):
                out = tmp / f"{name}-{repeat}"
                started = time.perf_counter()
                run(out)
                results.setdefault(name, []).append(time.perf_counter() - started)
                shutil.rmtree(out)
    moto.terminate()

    base = len(items) / statistics.median(results["plain-loop"])
    print(f"\n{len(items)} fashion pairs -> 320x320, {os.cpu_count()} cores, median of {args.repeats}\n")
    print("| setup | pairs/s | vs plain loop |\n|---|---:|---:|")
    for name, times in results.items():
        rate = len(items) / statistics.median(times)
        print(f"| {name} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
