"""Test-time flip: what ``--tta`` buys in mask quality and what it costs in speed.

Each model predicts every photo of the val and test splits of ``../shared/data`` twice through
``Predictor.predict``: once as it is, once with ``tta=True`` (the map is the mean of the photo's
and of its mirror image's). The table gives, per model, domain and split, mean IoU and the
share of photos >= 95 % IoU against the human masks (threshold 0.5), the paired difference
with its bootstrap 95 % interval (the one ``clearbg promote`` uses), and photos/s of each.

    python bench/tta.py                                  # u2netp and fashion, fp32
    python bench/tta.py --models fashion --precision auto
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image
from precision import DATA, DOMAINS, cpu_summary, iou, paired_ci, split_rows


def scores(predictor, domain: str, rows: list[dict]) -> tuple[np.ndarray, float]:
    """IoU per photo and photos/s over the whole split."""
    photos = [Image.open(DATA / domain / r["image"]).convert("RGB") for r in rows]
    truths = [np.asarray(Image.open(DATA / domain / r["mask"]).convert("L")) for r in rows]
    started = time.perf_counter()
    maps = predictor.predict(photos)
    rate = len(photos) / (time.perf_counter() - started)
    return np.array([iou(m, t) for m, t in zip(maps, truths)]), rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="u2netp,fashion", help="comma-separated model names")
    parser.add_argument("--precision", default="fp32", help="fp32 (the README's tables) or auto (what remove runs)")
    parser.add_argument("--splits", default="val,test")
    args = parser.parse_args()
    from clearbg.inference.predictor import Predictor

    print(cpu_summary())
    print("\n| model | domain | split | photos | mean IoU | with flip | Δ [95 % CI] | ≥ 95 % | with flip | img/s | with flip |")
    print("|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for model in args.models.split(","):
        plain = Predictor(model, precision=args.precision)
        flipped = Predictor(model, precision=args.precision, tta=True)
        for domain in DOMAINS:
            for split in args.splits.split(","):
                rows = split_rows(domain, split)
                base, base_rate = scores(plain, domain, rows)
                tta, tta_rate = scores(flipped, domain, rows)
                low, high = paired_ci(tta, base)
                print(f"| {plain.spec.name} ({plain.engine} {plain.precision}) | {domain} | {split} | {len(rows)} | "
                      f"{base.mean():.4f} | {tta.mean():.4f} | {tta.mean() - base.mean():+.4f} [{low:+.4f}, {high:+.4f}] | "
                      f"{(base >= 0.95).mean():.1%} | {(tta >= 0.95).mean():.1%} | {base_rate:.2f} | {tta_rate:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
