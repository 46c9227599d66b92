"""One photo from the command line, start to finish: ``clearbg remove`` against ``rembg i``.

What a user waits for when they try a tool on one photo: the whole process, interpreter start,
imports, model load, one inference, the PNG written. Both run the same official u2netp weights
(rembg through its ``u2net_custom`` session on the same u2netp.onnx that clearbg's weights
come from, as the other benches run it) on the same photos, interleaved, ``--runs`` times each; the table
gives the median wall time and the mean IoU of the written cutouts against the human masks
(alpha and mask at 128). Where the time goes in clearbg's run is printed from ``-X importtime``.

    python bench/first_photo.py                      # 5 fashion test photos, 1 run each
    python bench/first_photo.py --photos 3 --runs 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rembg_cli import rembg_executable

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion"


def test_photos(n: int) -> list[tuple[Path, Path]]:
    with open(DATA / "manifest.csv", newline="") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["split"] == "test"), key=lambda r: r["id"])
    return [(DATA / r["image"], DATA / r["mask"]) for r in rows[:n]]


def iou(cutout: Path, mask: Path) -> float:
    alpha = np.asarray(Image.open(cutout).convert("RGBA").getchannel("A")) >= 128
    truth = np.asarray(Image.open(mask).convert("L")) >= 128
    union = (alpha | truth).sum()
    return float((alpha & truth).sum() / union) if union else 1.0


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def import_seconds(photo: Path, out: Path) -> list[tuple[str, float]]:
    """The heaviest top-level imports of one ``clearbg remove`` run (cumulative seconds)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "clearbg", "remove", str(photo), "--out", str(out)],
                          capture_output=True, text=True, check=True)
    found = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(2)) <= 3:  # top-level and their direct children
            found[match.group(3)] = int(match.group(1)) / 1e6
    return sorted(found.items(), key=lambda kv: -kv[1])[:6]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1, help="runs per photo and tool")
    args = parser.parse_args()
    from clearbg.models.download import cached_onnx
    from clearbg.models.specs import get_spec

    pairs = test_photos(args.photos)
    with tempfile.TemporaryDirectory(prefix="first-photo-") as tmp:
        home = Path(tmp) / "rembg-home"
        home.mkdir()
        shutil.copy(cached_onnx(get_spec("u2netp")), home / "u2netp.onnx")
        env = dict(os.environ, U2NET_HOME=str(home))
        commands = {
            # --out is a folder for clearbg: the cutout lands in it as <stem>.png
            "clearbg remove PHOTO --out DIR": lambda p, o: [sys.executable, "-m", "clearbg", "remove", str(p),
                                                            "--out", str(o.with_suffix(""))],
            "rembg i PHOTO OUT": lambda p, o: [str(rembg_executable()), "i", "-m", "u2net_custom", "-x",
                                               json.dumps({"model_path": str(home / "u2netp.onnx")}), str(p), str(o)],
        }
        for tool, command in commands.items():  # warm the page cache and any first-run downloads
            warm = subprocess.run(command(pairs[0][0], Path(tmp) / "warm.png"), env=env, capture_output=True, text=True)
            if warm.returncode:
                sys.exit(f"{tool} failed:\n{warm.stderr[-2000:]}")
        seconds = {tool: [] for tool in commands}
        scores = {tool: [] for tool in commands}
        for run in range(args.runs):
            for i, (photo, mask) in enumerate(pairs):
                for tool, command in commands.items():
                    out = Path(tmp) / f"{len(scores[tool])}-{tool.split()[0]}.png"
                    seconds[tool].append(timed(command(photo, out), env))
                    written = out.with_suffix("") / f"{photo.stem}.png" if tool.startswith("clearbg") else out
                    if run == 0:
                        scores[tool].append(iou(written, mask))
        heavy = import_seconds(pairs[0][0], Path(tmp) / "profiled.png")

    base = statistics.median(seconds["rembg i PHOTO OUT"])
    print(f"\n{len(pairs)} fashion test photos x {args.runs} run(s), interleaved; {os.cpu_count()} cores\n")
    print("| command | median wall s | vs rembg i | mean IoU |")
    print("|---|---:|---:|---:|")
    for tool in commands:
        median = statistics.median(seconds[tool])
        print(f"| `{tool}` | {median:.2f} | {base / median:.2f}x | {np.mean(scores[tool]):.4f} |")
    print("\nclearbg's heaviest imports (cumulative s, one run): " + ", ".join(f"{m} {s:.2f}" for m, s in heavy))


if __name__ == "__main__":
    main()
