"""Product-type clustering quality on the fashion set, against its ``product_type`` column.

Prepares ../shared/data/fashion (all 702 pairs: duplicate and mismatch checks off, so nothing
is dropped) at 320x320 with ``clearbg.data.prepare`` into a work folder (kept: a rerun resumes),
extracts features once, then clusters with the default ``ClusterConfig`` and prints:

* adjusted Rand index, per-type purity (share of a type's photos in its most common cluster),
  per-cluster purity (share of a cluster's most common type) and light-group precision /
  recall, next to a random assignment with the same cluster sizes (median of 20 seeds);
* the variants considered (feature blocks, k, light rule, U2-Net embeddings with
  ``--embeddings``): ARI mean over 5 k-means seeds on all rows and on the held-out rows
  (val + test; the weights and threshold were chosen on train).

    python bench/cluster_quality.py                      # ~30 s once prepared (~45 s first)
    python bench/cluster_quality.py --embeddings         # + U2-NetP encoder variants (~2 min more)

Writes bench/results/cluster-quality-fashion-320.csv (the variants table).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from clearbg.data.cluster import DEFAULT_BLOCK_WEIGHTS, ClusterConfig, assign_clusters
from clearbg.data.features import EMBED_DIM, FEATURE_BLOCKS, N_FEATURES, dataset_features, feature_names
from clearbg.data.manifest import DatasetError, read_info, read_manifest, size_dir, write_info, write_manifest

FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion"
RESULTS = Path(__file__).resolve().parent / "results"
LIGHT_TYPE = "light_coloured"


def prepare(work: Path, size: tuple[int, int], fresh: bool = False) -> str:
    """A prepared dataset of all 702 fashion pairs in ``work`` (reused when already there)."""
    out = str(work / f"fashion-{size_dir(*size)}")
    if not fresh and _complete(out, size):
        return out
    try:
        from clearbg.data.clean import CleanOptions
        from clearbg.data.prepare import PrepareConfig, prepare_dataset
    except ImportError:  # before the prepare stage existed: write the same layout here
        return _prepare_by_hand(out, size)
    config = PrepareConfig(sizes=[size], clean=CleanOptions(near_duplicate_bits=0, mismatch="off"))
    prepare_dataset(str(FASHION / "manifest.csv"), out, config, restart=True, progress=sys.stderr.isatty())
    return out


def _complete(out: str, size: tuple[int, int]) -> bool:
    try:
        return len(read_manifest(out)) == 702 and [list(size)] == read_info(out)["sizes"]
    except (DatasetError, KeyError):
        return False


def _prepare_by_hand(out: str, size: tuple[int, int]) -> str:
    frame = pd.read_csv(FASHION / "manifest.csv", dtype={"id": str}, keep_default_na=False)
    folder = Path(out) / size_dir(*size)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for row in frame.itertuples():
        Image.open(FASHION / row.image).convert("RGB").resize(size, Image.Resampling.BILINEAR).save(folder / "images" / f"{row.id}.png")
        mask = np.asarray(Image.open(FASHION / row.mask).convert("L").resize(size, Image.Resampling.BILINEAR))
        Image.fromarray(((mask >= 128) * 255).astype(np.uint8)).save(folder / "masks" / f"{row.id}.png")
    frame["image"] = "images/" + frame["id"] + ".png"
    frame["mask"] = "masks/" + frame["id"] + ".png"
    write_manifest(frame, out)
    write_info(out, {"sizes": [list(size)], "resize": "stretch"})
    return out


# --------------------------------------------------------------------------- metrics


def purities(truth: np.ndarray, cluster: np.ndarray) -> tuple[dict[str, float], dict[int, tuple[str, float]]]:
    """(per true type: share in its most common cluster, per cluster: (majority type, share))."""
    table = pd.crosstab(pd.Series(truth, name="type"), pd.Series(cluster, name="cluster"))
    per_type = (table.max(axis=1) / table.sum(axis=1)).to_dict()
    per_cluster = {int(c): (str(table[c].idxmax()), float(table[c].max() / table[c].sum())) for c in table.columns}
    return per_type, per_cluster


def light_pr(truth: np.ndarray, light: np.ndarray) -> tuple[float, float]:
    gold = truth == LIGHT_TYPE
    hit = (light & gold).sum()
    return (hit / light.sum() if light.sum() else 0.0, hit / gold.sum() if gold.sum() else 0.0)


def metrics(truth: np.ndarray, cluster: np.ndarray, light: np.ndarray) -> dict[str, float]:
    per_type, per_cluster = purities(truth, cluster)
    precision, recall = light_pr(truth, light)
    out = {"ARI": adjusted_rand_score(truth, cluster), "light precision": precision, "light recall": recall}
    out.update({f"type purity: {t}": v for t, v in per_type.items()})
    out["type purity: mean"] = float(np.mean(list(per_type.values())))
    out.update({f"cluster purity: {c}": v for c, (_, v) in per_cluster.items()})
    out["cluster purity: mean (weighted)"] = float(
        sum(v * (cluster == c).sum() for c, (_, v) in per_cluster.items()) / len(cluster)
    )
    return out


def random_baseline(truth: np.ndarray, cluster: np.ndarray, light_id: int, seeds: int) -> dict[str, float]:
    """Median of each metric over random assignments with the same cluster sizes."""
    runs = []
    for seed in range(seeds):
        shuffled = np.random.default_rng(seed).permutation(cluster)
        runs.append(metrics(truth, shuffled, shuffled == light_id))
    return {k: float(np.median([r.get(k, np.nan) for r in runs])) for k in runs[0]}


# --------------------------------------------------------------------------- variants


def variant_rows(
    matrix: np.ndarray, truth: np.ndarray, held_out: np.ndarray, base: ClusterConfig, embed: np.ndarray | None
) -> list[dict]:
    only = lambda *names: {b: (1.0 if b in names else 0.0) for b in FEATURE_BLOCKS}  # noqa: E731
    variants: list[tuple[str, ClusterConfig, bool]] = [
        ("default (k=6, tuned block weights, light rule 0.40)", base, False),
        ("equal block weights", replace(base, block_weights={}), False),
        ("default + colour block (weight 1)", replace(base, block_weights={**DEFAULT_BLOCK_WEIGHTS, "colour": 1.0}), False),
        ("colour blocks only (colour, bands, light)", replace(base, block_weights=only("colour", "bands", "light")), False),
        ("mask shape only (shape, silhouette)", replace(base, block_weights=only("shape", "silhouette")), False),
        ("skin only", replace(base, block_weights=only("skin")), False),
        ("no light group (k-means on all, k=6)", replace(base, light_threshold=None), False),
        ("no light group, k=7", replace(base, light_threshold=None, k=7), False),
        ("light group alone (k=1)", replace(base, k=1), False),
    ]
    variants += [(f"k={k}", replace(base, k=k), False) for k in (3, 4, 5, 7, 8, 10)]
    variants += [(f"light threshold {t}", replace(base, light_threshold=t), False) for t in (0.30, 0.35, 0.45, 0.50)]
    variants += [(f"light 0.40 + edge contrast <= {c}", replace(base, light_max_contrast=c), False) for c in (20.0, 40.0)]
    if embed is not None:
        variants += [
            ("default + U2-NetP encoder (weight 1)", replace(base, block_weights={**DEFAULT_BLOCK_WEIGHTS, "embed": 1.0}), True),
            ("default + U2-NetP encoder (weight 2)", replace(base, block_weights={**DEFAULT_BLOCK_WEIGHTS, "embed": 2.0}), True),
            ("U2-NetP encoder only", replace(base, block_weights={**only(), "embed": 1.0}), True),
        ]
    rows = []
    for name, config, with_embed in variants:
        x = np.concatenate([matrix, embed], axis=1) if with_embed else matrix
        all_ari, held_ari = [], []
        for seed in range(5):
            cluster, light = assign_clusters(x, replace(config, seed=seed))
            all_ari.append(adjusted_rand_score(truth, cluster))
            held_ari.append(adjusted_rand_score(truth[held_out], cluster[held_out]))
        precision, recall = light_pr(truth, light)
        rows.append({
            "variant": name, "ARI": np.mean(all_ari), "ARI sd": np.std(all_ari), "ARI held-out": np.mean(held_ari),
            "light P": precision, "light R": recall,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "clearbg-bench")
    parser.add_argument("--size", type=int, nargs=2, default=(320, 320), metavar=("W", "H"))
    parser.add_argument("--random-seeds", type=int, default=20)
    parser.add_argument("--fresh", action="store_true", help="prepare again even if the work folder has the dataset")
    parser.add_argument("--embeddings", action="store_true", help="also try U2-NetP encoder features (slow on CPU)")
    args = parser.parse_args()

    started = time.perf_counter()
    dataset = prepare(args.work, tuple(args.size), args.fresh)
    frame = read_manifest(dataset)
    prepared_s = time.perf_counter() - started
    started = time.perf_counter()
    ids, matrix = dataset_features(dataset, frame=frame, progress=sys.stderr.isatty())
    features_s = time.perf_counter() - started
    truth = frame["product_type"].astype(str).to_numpy()
    held_out = frame["split"].isin(["val", "test"]).to_numpy()
    embed = None
    if args.embeddings:
        started = time.perf_counter()
        matrix_e = dataset_features(dataset, frame=frame, embeddings=True, progress=sys.stderr.isatty())[1]
        embed = matrix_e[:, N_FEATURES : N_FEATURES + EMBED_DIM]
        print(f"embeddings: {time.perf_counter() - started:.0f} s for {len(ids)} pairs (features included)")

    base = ClusterConfig()
    cluster, light = assign_clusters(matrix, base)
    ours = metrics(truth, cluster, light)
    rand = random_baseline(truth, cluster, base.k, args.random_seeds)
    _, per_cluster = purities(truth, cluster)

    print(f"fashion: {len(ids)} pairs at {args.size[0]}x{args.size[1]} ({dataset}); prepare {prepared_s:.1f} s, "
          f"features {features_s:.1f} s ({len(feature_names())} per pair)")
    print(f"default ClusterConfig: k={base.k} k-means clusters + light group (id {base.k}), seed {base.seed}\n")
    print(f"{'metric':52} {'clearbg':>8} {'random':>8}")
    for key, value in ours.items():
        label = key
        if key.startswith("cluster purity: ") and key[16:].isdigit():
            c = int(key[16:])
            label = f"cluster purity: {c} ({'light' if c == base.k else per_cluster[c][0]}, n={(cluster == c).sum()})"
        print(f"{label:52} {value:8.3f} {rand.get(key, float('nan')):8.3f}")

    rows = variant_rows(matrix, truth, held_out, base, embed)
    table = pd.DataFrame(rows)
    print("\nvariants (ARI: mean over k-means seeds 0-4; held-out = val+test rows, n=%d)" % held_out.sum())
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"cluster-quality-fashion-{args.size[0]}x{args.size[1]}.csv"
    table.to_csv(out, index=False, float_format="%.4f")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
