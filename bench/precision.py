"""The precision ladder: one model's speed and mask quality in every precision and engine.

fp32, bf16 and fp16 on clearbg's PyTorch path, and fp32, fp16 and int8 ONNX exports on ONNX
Runtime, all through ``Predictor.predict`` (photo in -> probability map at the photo's full
resolution out; no compositing, no disk writes) in this one process, one setup after the other.
The photos are the test splits of ``../shared/data`` (fashion 104, cars 15), never used for
training, selection or int8 calibration (int8 is the export ``clearbg remove`` runs by default,
calibrated on the 16 train-split photos clearbg ships). Each setup gets a
warm-up, then ``--passes`` timed passes over all photos in the CLI's batch mode (one photo per
core); the table quotes the median, the ratio against PyTorch fp32, and beside each speed the
mean IoU per domain against the human masks (threshold 0.5) and its difference from fp32 on
the same photos. The CPU's flags are printed: which precisions are native depends on them.

    python bench/precision.py                        # u2netp, all setups
    python bench/precision.py --model fashion --setups torch-fp32,torch-bf16,ort-int8
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DOMAINS = ("fashion", "cars")
SETUPS = {
    "torch-fp32": "PyTorch fp32",
    "torch-bf16": "PyTorch bf16",
    "torch-fp16": "PyTorch fp16",
    "ort-fp32": "ONNX Runtime fp32 (what rembg runs)",
    "ort-fp16": "ONNX Runtime fp16 export",
    "ort-int8": "ONNX Runtime int8 (the default with VNNI)",
}
FLAGS = ("avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_fp16")


def cpu_summary() -> str:
    """Model name, cores and the instruction-set flags that decide which precision is native."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return f"{name}, {os.cpu_count()} cores, flags: {' '.join(f for f in FLAGS if f in flags) or 'none of ' + ','.join(FLAGS)}"


def split_rows(domain: str, split: str) -> list[dict]:
    with open(DATA / domain / "manifest.csv", newline="") as f:
        return sorted((r for r in csv.DictReader(f) if r["split"] == split), key=lambda r: r["id"])


def iou(prob: np.ndarray, truth: np.ndarray) -> float:
    pred, gt = prob >= 0.5, truth >= 128
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


def paired_ci(scores: np.ndarray, base: np.ndarray) -> tuple[float, float]:
    """95 % bootstrap interval of the mean per-photo IoU difference (the one ``clearbg promote`` uses)."""
    from clearbg.evaluate.compare import _bootstrap_ci

    return _bootstrap_ci(scores - base, np.random.default_rng(0), 5000)


def export_variants(model: str, folder: Path, wanted: list[str]) -> dict[str, Path]:
    """The model as the ONNX files the ``ort-*`` setups need (dynamic batch); int8 is the cached
    export the default path runs (built here if it is not cached yet)."""
    from clearbg.inference.int8_cache import cached_int8
    from clearbg.inference.onnx_export import export_file
    from clearbg.models.hub import resolve

    paths = {}
    for variant in sorted({s.split("-")[1] for s in wanted if s.startswith("ort-")}):
        start = time.perf_counter()
        if variant == "int8":
            paths[variant] = cached_int8(resolve(model))
        else:
            paths[variant] = export_file(model, folder / f"model-{variant}.onnx", dynamic_batch=True, precision=variant)
        print(f"{variant} export ready in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return paths


def predictor_for(setup: str, model: str, files: dict[str, Path]):
    from clearbg.inference.predictor import Predictor

    engine, precision = setup.split("-")
    if engine == "torch":
        return Predictor(model, device="cpu", precision=precision, engine="torch")
    return Predictor(files[precision], engine="onnxruntime")


def measure(predictor, photos: list[Image.Image], passes: int) -> tuple[float, list[np.ndarray]]:
    """Median images/s over ``passes`` (after a short warm-up) and the last pass's maps."""
    predictor.predict(photos[:4])
    rates, maps = [], []
    for _ in range(passes):
        start = time.perf_counter()
        maps = predictor.predict(photos)
        rates.append(len(photos) / (time.perf_counter() - start))
    return statistics.median(rates), maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="u2netp", help="any model reference (spec name, shipped alias, checkpoint)")
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated subset of " + ",".join(SETUPS))
    args = parser.parse_args()
    setups = args.setups.split(",")
    if unknown := [s for s in setups if s not in SETUPS]:
        sys.exit(f"unknown setups {unknown}; choose from {', '.join(SETUPS)}")

    test = [(d, r) for d in DOMAINS for r in split_rows(d, "test")]
    photos = [Image.open(DATA / d / r["image"]).convert("RGB") for d, r in test]
    truths = [np.asarray(Image.open(DATA / d / r["mask"]).convert("L")) for d, r in test]
    domain_of = np.array([d for d, _ in test])
    results, per_photo = [], {}
    with tempfile.TemporaryDirectory(prefix="clearbg-precision-") as tmp:
        files = export_variants(args.model, Path(tmp), setups)
        for setup in setups:
            print(f"running {setup} ...", file=sys.stderr, flush=True)
            rate, maps = measure(predictor_for(setup, args.model, files), photos, args.passes)
            scores = np.array([iou(m, t) for m, t in zip(maps, truths)])
            row = {"setup": setup, "images_per_s": rate}
            for d in DOMAINS:
                row[f"{d}_iou"] = float(scores[domain_of == d].mean())
                row[f"{d}_ge95"] = float((scores[domain_of == d] >= 0.95).mean())
            row["file_mb"] = files[setup.split("-")[1]].stat().st_size / 1e6 if setup.startswith("ort") else None
            per_photo[setup] = scores
            results.append(row)

    base = next((r for r in results if r["setup"] == "torch-fp32"), results[0])
    for r in results:  # is a difference more than the photos' noise? a paired bootstrap says
        for d in DOMAINS:
            low, high = paired_ci(per_photo[r["setup"]][domain_of == d], per_photo[base["setup"]][domain_of == d])
            r[f"{d}_ci_low"], r[f"{d}_ci_high"] = low, high
    counts = ", ".join(f"{d} {int((domain_of == d).sum())}" for d in DOMAINS)
    print(f"\n{args.model}; test photos: {counts}; {cpu_summary()}; median of {args.passes} pass(es); "
          f"differences against {base['setup']}\n")
    header = ("| setup | images/s | vs fp32 | fashion IoU | Δ fp32 [95 % CI] | ≥95 % | cars IoU | Δ fp32 [95 % CI] | ≥95 % | file MB |")
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        size = f"{r['file_mb']:.1f}" if r["file_mb"] else "—"
        cells = [SETUPS[r["setup"]], f"{r['images_per_s']:.2f}", f"{r['images_per_s'] / base['images_per_s']:.2f}×"]
        for d in DOMAINS:
            delta = f"{r[f'{d}_iou'] - base[f'{d}_iou']:+.4f} [{r[f'{d}_ci_low']:+.4f}, {r[f'{d}_ci_high']:+.4f}]"
            cells += [f"{r[f'{d}_iou']:.4f}", delta, f"{100 * r[f'{d}_ge95']:.1f}"]
        print("| " + " | ".join(cells + [size]) + " |")
    out = Path(__file__).parent / "results" / f"precision-{Path(args.model).stem}-cpu{os.cpu_count()}.csv"
    out.parent.mkdir(exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
