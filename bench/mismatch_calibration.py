"""Calibrate cleaning on real data: mismatched-pair edge scores, pHash near-duplicates, speed.

Runs ``clearbg.data.clean.check_pair`` over every pair of ../shared/data/fashion (702) and
../shared/data/cars (100), then:

1. **Mismatched pairs.** Builds swapped pairs (a photo with another random photo's mask from
   the same domain, resized to the photo's size, since a differently sized mask is caught as
   ``size_mismatch`` anyway) and scores them through the same ``check_pair``. Prints the edge
   score distributions of true and swapped pairs, a threshold sweep (false positives among
   true pairs, recall on swaps), and what ``find_mismatched`` with the default options flags
   when the swaps are mixed into the real pairs (full domains, and many 10-pair sets). A third
   block puts photos on a white studio background (composited through their own mask:
   synthetic) to check that a plain background does not hide swapped masks.
2. **Near-duplicates.** pHash Hamming distances of the 9 near-duplicate pairs listed in
   ../shared/data/README.md (column ``dup_group``) against all other pairs of fashion photos;
   found / false pairs per threshold; what ``find_duplicates`` drops with the defaults.
3. **Speed.** ``check_pair`` pairs/s on fashion, one process, files from the local disk.

    python bench/mismatch_calibration.py            # about a minute on 2 cores
    python bench/mismatch_calibration.py --swaps 400 --seed 1
"""

from __future__ import annotations

import argparse
import io
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clearbg.data.clean import CleanOptions, check_pair, find_duplicates, find_mismatched, hamming
from clearbg.data.pairs import Pair, find_pairs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _resized_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape[::-1] == size:
        return mask
    return np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 127, b > 127
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def _describe(values: np.ndarray) -> str:
    q = np.percentile(values, [0, 1, 5, 25, 50, 75, 95, 100])
    return " ".join(f"{v:5.2f}" for v in q)


def _swaps(checks, count: int, rng: random.Random, *, studio: bool = False):
    """Score ``count`` swapped pairs: photo i with mask j (resized to photo i), i != j."""
    rows = []
    for _ in range(count):
        i, j = rng.sample(range(len(checks)), 2)
        photo, own = checks[i].photo, checks[i].mask
        if studio:
            photo = _on_white(photo, own)
        other = _resized_mask(checks[j].mask, (photo.shape[1], photo.shape[0]))
        result = check_pair(
            Pair(f"{checks[i].pair.id}+{checks[j].pair.id}", "photo", "mask"),
            image_bytes=_jpeg(photo) if studio else _png(photo),
            mask_bytes=_png(other),
        )
        rows.append({"id": result.pair.id, "edge_score": result.stats.get("edge_score"), "iou": _iou(own, other),
                     "reason": result.reason})
    return pd.DataFrame(rows)


def _on_white(photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    keep = (mask > 127)[..., None]
    return np.where(keep, photo, np.uint8(255)).astype(np.uint8)


def _studio_true(checks, count: int, rng: random.Random):
    rows = []
    for k in rng.sample(range(len(checks)), min(count, len(checks))):
        c = checks[k]
        result = check_pair(Pair(c.pair.id, "photo", "mask"), image_bytes=_jpeg(_on_white(c.photo, c.mask)),
                            mask_bytes=_png(c.mask))
        rows.append({"id": c.pair.id, "edge_score": result.stats.get("edge_score")})
    return pd.DataFrame(rows)


def mismatch_section(domains: dict, swaps: dict, studio: dict, options: CleanOptions, rng: random.Random) -> None:
    print("\n## Edge score (quantiles: min p1 p5 p25 median p75 p95 max)")
    for name in domains:
        true = domains[name]["edge_score"].dropna().to_numpy()
        swap = swaps[name]["edge_score"].dropna().to_numpy()
        print(f"{name:8s} true    n={len(true):4d}  {_describe(true)}")
        print(f"{name:8s} swapped n={len(swap):4d}  {_describe(swap)}")
    for name in studio:
        true = studio[name][0]["edge_score"].dropna().to_numpy()
        swap = studio[name][1]["edge_score"].dropna().to_numpy()
        print(f"{name + '*':8s} true    n={len(true):4d}  {_describe(true)}   (* on white, synthetic)")
        print(f"{name + '*':8s} swapped n={len(swap):4d}  {_describe(swap)}")

    print("\n## Absolute threshold sweep: pairs flagged (edge score < t)")
    header = "   t   " + "  ".join(f"{n + ' FP':>12s}  {n + ' recall':>15s}" for n in domains)
    print(header + "   recall on swaps with mask IoU < 0.8")
    for t in np.arange(1.2, 2.01, 0.05):
        cells, low_iou = [], []
        for name in domains:
            true, swap = domains[name]["edge_score"], swaps[name]
            fp = int((true < t).sum())
            cells.append(f"{fp:>5d}/{len(true):<6d}  {(swap['edge_score'] < t).mean():>15.1%}")
            hard = swap[swap["iou"] < 0.8]
            low_iou.append(f"{name} {(hard['edge_score'] < t).mean():.1%}")
        print(f"{t:5.2f}  " + "  ".join(cells) + "   " + ", ".join(low_iou))

    print(
        f"\n## find_mismatched with the defaults (min_edge={options.mismatch_min_edge}, "
        f"soft_edge={options.mismatch_soft_edge}, mad_k={options.mismatch_mad_k}, "
        f"min_pairs={options.mismatch_min_pairs})"
    )
    for label, names in [(n, [n]) for n in domains] + [("fashion+cars", list(domains))]:
        true = pd.concat([domains[n][["id", "edge_score"]] for n in names])
        swap = pd.concat([swaps[n][["id", "edge_score", "iou"]] for n in names])
        flagged = find_mismatched(pd.concat([true, swap[["id", "edge_score"]]]), options)
        fp = sorted(i for i in true["id"] if i in flagged)
        hits = swap["id"].isin(list(flagged))
        print(
            f"{label:13s} true pairs flagged {len(fp)}/{len(true)} {fp[:6]}; swaps flagged "
            f"{hits.mean():.1%} of {len(swap)} ({hits[swap['iou'] < 0.8].mean():.1%} of those with mask IoU < 0.8)"
        )
    for name in studio:
        true, swap = studio[name]
        flagged = find_mismatched(pd.concat([true, swap[["id", "edge_score"]]]), options)
        print(
            f"{name + '*':13s} true pairs flagged {sum(i in flagged for i in true['id'])}/{len(true)}; "
            f"swaps flagged {swap['id'].isin(list(flagged)).mean():.1%} of {len(swap)} (on white, synthetic)"
        )
    # Small datasets: 8 true + 2 swapped, many draws; only the absolute threshold applies.
    fp = hit = 0
    trials = 200
    for _ in range(trials):
        name = rng.choice(list(domains))
        true = domains[name].sample(8, random_state=rng.randrange(1 << 30))[["id", "edge_score"]]
        swap = swaps[name].sample(2, random_state=rng.randrange(1 << 30))[["id", "edge_score"]]
        flagged = find_mismatched(pd.concat([true, swap]), options)
        fp += sum(i in flagged for i in true["id"])
        hit += sum(i in flagged for i in swap["id"])
    print(f"10-pair sets x{trials}: true pairs flagged {fp}/{8 * trials}, swaps flagged {hit / (2 * trials):.1%}")


def phash_section(checks, options: CleanOptions) -> None:
    manifest = pd.read_csv(DATA / "fashion" / "manifest.csv", dtype=str, keep_default_na=False)
    groups = manifest[manifest["dup_group"] != ""].groupby("dup_group")["id"].apply(sorted)
    hashes = {c.pair.id: c.stats["phash"] for c in checks}
    listed = {tuple(ids) for ids in groups}
    dup_dist = {pair: hamming(hashes[pair[0]], hashes[pair[1]]) for pair in listed}
    print("\n## pHash near-duplicates (fashion, 9 listed pairs)")
    print("listed pair distances: " + ", ".join(f"{a[4:]}/{b[4:]}={d}" for (a, b), d in sorted(dup_dist.items())))
    ids = sorted(hashes)
    values = np.array([int(hashes[i], 16) for i in ids], dtype=np.uint64)
    distances = []
    for k in range(len(ids)):
        xor = values[k] ^ values[k + 1 :]
        bits = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        distances.extend((ids[k], ids[k + 1 + m], int(d)) for m, d in enumerate(bits) if d <= 16)
    other = [(a, b, d) for a, b, d in distances if (a, b) not in listed]
    print(" bits  listed found  other pairs within")
    for t in range(0, 17, 2):
        found = sum(d <= t for d in dup_dist.values())
        print(f"  {t:3d}  {found:>7d}/9    {sum(d <= t for _, _, d in other):>6d}")
    closest = sorted(other, key=lambda x: x[2])[:5]
    print("closest unlisted pairs: " + ", ".join(f"{a[4:]}/{b[4:]}={d}" for a, b, d in closest))
    stats = pd.DataFrame([{"id": c.pair.id, **c.stats} for c in checks])
    dropped = find_duplicates(stats, options)
    hits = [i for i in dropped if any(i in pair for pair in listed)]
    print(
        f"find_duplicates(near_duplicate_bits={options.near_duplicate_bits}): drops {len(dropped)}: "
        f"{len(hits)} from listed pairs, {len(dropped) - len(hits)} others {sorted(set(dropped) - set(hits))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swaps", type=int, default=200, help="swapped pairs per domain (cars: half)")
    parser.add_argument("--studio", type=int, default=100, help="synthetic white-background pairs per domain")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    options = CleanOptions()

    checks, frames = {}, {}
    for name in ("fashion", "cars"):
        pairs = list(find_pairs(str(DATA / name)))
        start = time.perf_counter()
        checks[name] = [check_pair(p, options) for p in pairs]
        elapsed = time.perf_counter() - start
        bad = [c.pair.id for c in checks[name] if c.reason]
        print(f"{name}: {len(pairs)} pairs checked in {elapsed:.1f} s = {len(pairs) / elapsed:.0f} pairs/s "
              f"(one process); rejected by check_pair: {bad}")
        frames[name] = pd.DataFrame([{"id": c.pair.id, "edge_score": c.stats.get("edge_score")} for c in checks[name]])
    swaps = {
        "fashion": _swaps(checks["fashion"], args.swaps, rng),
        "cars": _swaps(checks["cars"], max(1, args.swaps // 2), rng),
    }
    studio = {
        name: (_studio_true(checks[name], args.studio, rng), _swaps(checks[name], args.studio, rng, studio=True))
        for name in checks
    }
    mismatch_section(frames, swaps, studio, options, rng)
    phash_section(checks["fashion"], replace(options))


if __name__ == "__main__":
    main()
