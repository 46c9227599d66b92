"""Group the pairs of a prepared dataset into product types, as the Wehkamp pipeline does.

Two steps (../shared/seeds, Wehkamp): a **light group** by rule, then **k-means** on the rest.

* Light-coloured products are hard to cut from a white studio background, so they get a group
  of their own whatever their type. The rule reads the product itself (skin, head and feet
  left out, see ``clearbg.data.features``): a pair is light when at least ``light_threshold``
  of it has L* >= 65. On the fashion set (702 pairs at 320x320, ``product_type ==
  light_coloured`` as truth) 0.40 gives precision 0.66 / recall 0.79 (train 0.66 / 0.81,
  held-out val+test 0.65 / 0.75; ``bench/cluster_quality.py``). ``light_max_contrast`` can further keep only products whose
  outline is close in L* to the background (the hard cases on studio photos); on the street
  photos of the fashion set it only lowers recall, so it is off by default.
* The other pairs are clustered with scikit-learn's ``KMeans`` (``n_init`` fixed,
  ``random_state=seed``: the same input and seed give the same clusters) on standardised
  features, each block weighted (``DEFAULT_BLOCK_WEIGHTS``): skin and shape cues carry the
  type (bare legs, bare arms, a gap between the legs), overall colour mostly does not.

Cluster ids: k-means clusters are numbered by size (0 = largest), the light group is ``k``.
Names: ``light`` for the light group; with labelled examples (a mapping, or a manifest column
filled for some rows) each cluster takes the majority label of its labelled members, else
``cluster-<i>``.

``cluster_and_write`` is the whole stage: features, clusters, the manifest's ``cluster``,
``cluster_name`` and ``light`` columns (replaced on a rerun) and a report in
``DATASET/clusters/`` (one PNG grid per cluster and ``clusters.html``).
"""

from __future__ import annotations

import html
import io
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from clearbg import storage
from clearbg.data.features import (
    FEATURE_BLOCKS,
    dataset_features,
    dataset_size,
    feature_names,
    load_pair,
    standardise,
)
from clearbg.data.manifest import DatasetError, read_info, read_manifest, write_info, write_manifest

__all__ = [
    "CLUSTER_COLUMNS",
    "DEFAULT_BLOCK_WEIGHTS",
    "LIGHT_NAME",
    "REPORT_DIR",
    "ClusterConfig",
    "ClusterRun",
    "assign_clusters",
    "cluster_and_write",
    "cluster_dataset",
    "is_light",
    "load_labels",
    "name_clusters",
    "summarise",
    "write_cluster_columns",
    "write_report",
]

CLUSTER_COLUMNS = ("cluster", "cluster_name", "light")
LIGHT_NAME = "light"
REPORT_DIR = "clusters"

# Chosen by coordinate search on the fashion set's train split (bench/cluster_quality.py): ARI
# 0.129 against 0.119 with equal weights at k=6, and steadier across seeds (sd 0.001 vs 0.007);
# on the held-out rows the two tie (0.132 vs 0.133). Skin (bare arms, bare legs) and outline
# carry the type; overall colour mostly does not (and the light rule already uses lightness).
DEFAULT_BLOCK_WEIGHTS: dict[str, float] = {
    "shape": 2.0, "silhouette": 1.0, "colour": 0.0, "bands": 1.0, "skin": 3.0, "light": 1.0,
}

# Report layout: tiles of the product cut out on grey, in a grid of GRID_COLUMNS columns.
TILE_W, TILE_H = 128, 192
GRID_COLUMNS = 6
GAP = 2
PAGE_RGB = (255, 255, 255)
TILE_RGB = (128, 128, 128)


@dataclass
class ClusterConfig:
    """How ``cluster_dataset`` groups pairs. Defaults suit product photos of people/garments."""

    k: int = 6                                # k-means clusters; the light group comes on top (id k)
    light_threshold: float | None = 0.40      # share of the product (no skin/head/feet) with L* >= 65; None: no light group
    light_max_contrast: float | None = None   # also require outline-to-background L* contrast <= this
    seed: int = 0                             # KMeans random_state: same seed, same clusters
    n_init: int = 10                          # KMeans restarts (fixed, so results do not drift)
    block_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_BLOCK_WEIGHTS))
    embeddings: bool = False                  # add U2-NetP encoder features (ARI +0.004 on fashion, ~50x slower)

    def validate(self) -> None:
        """Raises ValueError naming the bad field."""
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.n_init < 1:
            raise ValueError(f"n_init must be >= 1, got {self.n_init}")
        if self.light_threshold is not None and not 0.0 <= self.light_threshold <= 1.0:
            raise ValueError(f"light_threshold is a share of the product, 0..1, got {self.light_threshold}")
        unknown = set(self.block_weights) - set(FEATURE_BLOCKS) - {"embed"}
        if unknown:
            raise ValueError(f"unknown feature block(s) {sorted(unknown)}; blocks are {[*FEATURE_BLOCKS, 'embed']}")


# --------------------------------------------------------------------------- on a feature matrix


def is_light(matrix: np.ndarray, config: ClusterConfig) -> np.ndarray:
    """The light-product rule on raw feature rows (``pair_features``): a bool per row.

    Example:
        >>> x = np.zeros((2, len(feature_names())), np.float32)
        >>> x[0, feature_names().index("light.share_L65")] = 0.9
        >>> is_light(x, ClusterConfig()).tolist()
        [True, False]
    """
    if config.light_threshold is None:
        return np.zeros(len(matrix), bool)
    names = feature_names()
    light = matrix[:, names.index("light.share_L65")] >= config.light_threshold
    if config.light_max_contrast is not None:
        light &= matrix[:, names.index("light.edge_contrast")] <= config.light_max_contrast
    return light


def assign_clusters(matrix: np.ndarray, config: ClusterConfig) -> tuple[np.ndarray, np.ndarray]:
    """Cluster raw feature rows: the light rule first, k-means on the rest.

    Args:
        matrix: (n, d) raw features from ``pair_features`` / ``dataset_features``.
        config: k, seed, light rule and block weights.

    Returns:
        (cluster, light): int64 ids (k-means clusters 0..k-1 by decreasing size, the light
        group ``k``) and the light flag, one per row.

    Raises:
        ValueError: a bad config.
        DatasetError: fewer pairs outside the light group than ``k``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(40, len(feature_names()))).astype(np.float32)
        >>> cluster, light = assign_clusters(x, ClusterConfig(k=3, light_threshold=None))
        >>> sorted(set(cluster.tolist()))
        [0, 1, 2]
    """
    from sklearn.cluster import KMeans

    config.validate()
    light = is_light(matrix, config)
    rest = np.flatnonzero(~light)
    if len(rest) < config.k:
        raise DatasetError(
            f"only {len(rest)} pairs outside the light group, fewer than k={config.k} clusters: "
            "lower --k (or the light rule catches too much: raise --light-threshold)"
        )
    z = standardise(matrix[rest], config.block_weights)
    km = KMeans(n_clusters=config.k, n_init=config.n_init, random_state=config.seed)
    raw = km.fit_predict(z)
    # Number by size (ties: the cluster of the earliest row first) so ids read the same on reruns.
    sizes = np.bincount(raw, minlength=config.k)
    first = np.array([np.flatnonzero(raw == c)[0] if sizes[c] else len(raw) for c in range(config.k)])
    order = sorted(range(config.k), key=lambda c: (-sizes[c], first[c]))
    relabel = np.empty(config.k, np.int64)
    relabel[order] = np.arange(config.k)
    cluster = np.full(len(matrix), config.k, np.int64)
    cluster[rest] = relabel[raw]
    return cluster, light


def name_clusters(
    cluster: Sequence[int], labels: Sequence[Any], k: int, light_id: int | None = None
) -> dict[int, str]:
    """Name every cluster id 0..k (and the light group) by the majority of its labelled members.

    Args:
        cluster: cluster id per row.
        labels: label per row; None, NaN and "" mean unlabelled.
        k: number of k-means clusters (ids 0..k-1).
        light_id: id of the light group (named ``light`` regardless of labels).

    Returns:
        id -> name. Unlabelled clusters are ``cluster-<i>``. Ties go to the label that sorts
        first; two clusters with the same majority become ``<label>-<id>`` each.

    Example:
        >>> name_clusters([0, 0, 1, 2], ["pants", None, "shorts", None], k=2, light_id=2)
        {0: 'pants', 1: 'shorts', 2: 'light'}
    """
    votes: dict[int, Counter] = {c: Counter() for c in range(k)}
    for c, label in zip(cluster, labels):
        if c in votes and _is_label(label):
            votes[c][str(label)] += 1
    names = {}
    for c, counter in votes.items():
        names[c] = min(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counter else f"cluster-{c}"
    taken = Counter(names.values())
    names = {c: (f"{n}-{c}" if taken[n] > 1 else n) for c, n in names.items()}
    if light_id is not None:
        names[light_id] = LIGHT_NAME
    return names


def _is_label(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return str(value).strip() != ""


# --------------------------------------------------------------------------- on a dataset


def load_labels(spec: str | Mapping[str, Any] | None, frame: pd.DataFrame) -> dict[str, str]:
    """Labelled examples as ``{id: label}``, from a mapping, a manifest column or a CSV file.

    Args:
        spec: a mapping id -> label; the name of a column of ``frame`` (rows left empty are
            unlabelled); or a CSV path/URI with an ``id`` column and a ``label`` column (or
            exactly one other column).
        frame: the manifest.

    Raises:
        DatasetError: neither a column nor a readable CSV, or a CSV without usable columns.

    Example:
        >>> frame = pd.DataFrame({"id": ["a", "b"], "kind": ["pants", ""]})
        >>> load_labels("kind", frame)
        {'a': 'pants'}
    """
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return {str(k): str(v) for k, v in spec.items() if _is_label(v)}
    if spec in frame.columns:
        return {str(i): str(v) for i, v in zip(frame["id"], frame[spec]) if _is_label(v)}
    if not spec.lower().endswith(".csv") or not storage.exists(spec):
        raise DatasetError(
            f"--labels {spec!r} is neither a manifest column ({', '.join(map(str, frame.columns))}) "
            "nor an existing .csv file with columns id,label"
        )
    try:
        table = pd.read_csv(io.BytesIO(storage.read_bytes(spec)), dtype=str, keep_default_na=False)
    except Exception as err:  # noqa: BLE001 - pandas raises many types on bad files
        raise DatasetError(f"cannot read labels {spec}: {err}") from err
    others = [c for c in table.columns if c != "id"]
    column = "label" if "label" in table.columns else (others[0] if len(others) == 1 else None)
    if "id" not in table.columns or column is None:
        raise DatasetError(f"labels {spec} needs an 'id' column and a 'label' column, has {list(table.columns)}")
    return {str(i): v for i, v in zip(table["id"], table[column]) if _is_label(v)}


def cluster_dataset(
    dataset: str,
    config: ClusterConfig | None = None,
    labels: str | Mapping[str, Any] | None = None,
    *,
    frame: pd.DataFrame | None = None,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Cluster every pair of a prepared dataset into product types.

    Args:
        dataset: prepared dataset folder or ``s3://`` prefix (``clearbg prepare`` output).
        config: k, seed, light rule (default ``ClusterConfig()``).
        labels: a few labelled examples to name clusters: ``{id: label}``, a manifest column
            or a CSV (see ``load_labels``); None names them ``cluster-<i>``.
        frame: the manifest, if already read.
        progress: progress bar for feature extraction (default: on a terminal).

    Returns:
        DataFrame in manifest order with columns ``id``, ``cluster`` (int), ``cluster_name``
        (str) and ``light`` (bool).

    Raises:
        DatasetError: not a prepared dataset, too few pairs for ``k``, unusable labels.
        StorageError / ImageError: a file of the dataset is missing or does not decode.

    Example:
        >>> table = cluster_dataset("data/fashion-320", ClusterConfig(k=6), labels="product_type")  # doctest: +SKIP
        >>> table.cluster_name.value_counts()  # doctest: +SKIP
    """
    config = config or ClusterConfig()
    config.validate()
    frame = read_manifest(dataset) if frame is None else frame
    if frame.empty:
        raise DatasetError(f"{dataset} has no pairs to cluster")
    named = load_labels(labels, frame)
    ids, matrix = dataset_features(dataset, frame=frame, embeddings=config.embeddings, progress=progress)
    cluster, light = assign_clusters(matrix, config)
    light_id = config.k if config.light_threshold is not None else None
    names = name_clusters(cluster, [named.get(i) for i in ids], config.k, light_id)
    return pd.DataFrame({
        "id": ids,
        "cluster": cluster,
        "cluster_name": [names[c] for c in cluster],
        "light": light,
    })


def summarise(clusters: pd.DataFrame, config: ClusterConfig | None = None) -> pd.DataFrame:
    """One row per cluster: ``cluster``, ``cluster_name``, ``size``, ``share``, ``light``.

    With ``config`` every id 0..k (and the light group, even when empty) is listed.
    """
    sizes = clusters.groupby("cluster").size()
    names = clusters.groupby("cluster")["cluster_name"].first()
    ids = sorted(set(sizes.index))
    if config is not None:
        ids = sorted(set(ids) | set(range(config.k)) | ({config.k} if config.light_threshold is not None else set()))
    total = max(len(clusters), 1)
    rows = []
    for c in ids:
        size = int(sizes.get(c, 0))
        light = config is not None and config.light_threshold is not None and c == config.k
        name = names.get(c, LIGHT_NAME if light else f"cluster-{c}")
        rows.append({"cluster": int(c), "cluster_name": name, "size": size, "share": size / total,
                     "light": bool(light or (name == LIGHT_NAME))})
    return pd.DataFrame(rows)


def write_cluster_columns(dataset: str, clusters: pd.DataFrame, frame: pd.DataFrame | None = None) -> str:
    """Put ``cluster``, ``cluster_name`` and ``light`` into the dataset's manifest (atomic write).

    Earlier values of these columns are replaced; other columns and the row order are kept.

    Returns:
        The URI of the manifest written.

    Raises:
        DatasetError: ``clusters`` does not cover every id of the manifest.
    """
    frame = read_manifest(dataset) if frame is None else frame
    out = frame.drop(columns=[c for c in CLUSTER_COLUMNS if c in frame.columns])
    by_id = clusters.set_index("id")
    missing = set(out["id"].astype(str)) - set(by_id.index.astype(str))
    if missing:
        raise DatasetError(f"{len(missing)} manifest ids have no cluster (e.g. {sorted(missing)[0]}); re-run clustering")
    keys = out["id"].astype(str)
    out["cluster"] = by_id.loc[keys, "cluster"].astype("int64").to_numpy()
    out["cluster_name"] = by_id.loc[keys, "cluster_name"].astype(str).to_numpy()
    out["light"] = by_id.loc[keys, "light"].astype(bool).to_numpy()
    return write_manifest(out, dataset)


# --------------------------------------------------------------------------- report


def grid_shape(n_tiles: int) -> tuple[int, int]:
    """(columns, rows) of a grid of ``n_tiles`` (at least one empty row for an empty cluster)."""
    return GRID_COLUMNS, max(1, math.ceil(n_tiles / GRID_COLUMNS))


def _tile(photo: np.ndarray, mask: np.ndarray) -> Image.Image:
    """The product cut out onto grey, cropped to its box and fitted into one tile."""
    fg = mask >= 128
    grey = np.empty_like(photo)
    grey[:] = TILE_RGB
    cut = np.where(fg[..., None], photo, grey)
    if fg.any():
        rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
        cut = cut[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    image = Image.fromarray(np.ascontiguousarray(cut))
    image.thumbnail((TILE_W, TILE_H), Image.Resampling.BILINEAR)
    tile = Image.new("RGB", (TILE_W, TILE_H), TILE_RGB)
    tile.paste(image, ((TILE_W - image.width) // 2, (TILE_H - image.height) // 2))
    return tile


def _grid(tiles: list[Image.Image]) -> Image.Image:
    cols, rows = grid_shape(len(tiles))
    page = Image.new("RGB", (GAP + cols * (TILE_W + GAP), GAP + rows * (TILE_H + GAP)), PAGE_RGB)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        page.paste(tile, (GAP + c * (TILE_W + GAP), GAP + r * (TILE_H + GAP)))
    return page


def write_report(
    dataset: str,
    clusters: pd.DataFrame,
    config: ClusterConfig | None = None,
    *,
    frame: pd.DataFrame | None = None,
    labels: Mapping[str, str] | None = None,
    per_cluster: int = 24,
) -> str:
    """Write ``DATASET/clusters/cluster-<id>.png`` (a grid of members) and ``clusters.html``.

    Each grid shows up to ``per_cluster`` members drawn at random (seeded by the config's
    seed), cut out on grey, so a person can check what a cluster holds and name it.

    Returns:
        The URI of ``clusters.html``.
    """
    config = config or ClusterConfig()
    frame = read_manifest(dataset) if frame is None else frame
    size = dataset_size(dataset)
    rows = frame.set_index(frame["id"].astype(str))
    folder = storage.join(dataset, REPORT_DIR)
    summary = summarise(clusters, config)
    rng = np.random.default_rng(config.seed)
    written = set()
    sections = []
    for item in summary.itertuples():
        members = clusters.loc[clusters["cluster"] == item.cluster, "id"].astype(str).to_numpy()
        shown = np.sort(rng.choice(members, size=min(per_cluster, len(members)), replace=False)) if len(members) else []
        tiles = [_tile(*load_pair(dataset, size, rows.at[i, "image"], rows.at[i, "mask"])) for i in shown]
        png = f"cluster-{item.cluster}.png"
        buffer = io.BytesIO()
        _grid(tiles).save(buffer, format="PNG")
        storage.write_bytes(storage.join(folder, png), buffer.getvalue())
        written.add(png)
        composition = ""
        if labels:
            votes = Counter(labels[i] for i in members if i in labels)
            composition = ", ".join(f"{html.escape(k)} {v}" for k, v in votes.most_common(4))
        sections.append(
            f"<tr><td>{item.cluster}</td><td>{html.escape(str(item.cluster_name))}</td><td>{item.size}</td>"
            f"<td>{item.share:.1%}</td><td>{composition}</td>"
            f"<td><img src=\"{png}\" alt=\"{len(tiles)} members of cluster {item.cluster}\"></td></tr>"
        )
    _remove_stale(folder, written)
    weights = " ".join(f"{b}={w:g}" for b, w in config.block_weights.items())
    settings = html.escape(
        f"k={config.k}, seed={config.seed}, n_init={config.n_init}, block weights: {weights}"
        + (", with U2-NetP embeddings" if config.embeddings else "")
    )
    if config.light_threshold is None:
        rule = "no light group"
    else:
        rule = f"light group: at least {config.light_threshold:g} of the product with L* &ge; 65"
        if config.light_max_contrast is not None:
            rule += f" and outline contrast to the background &le; {config.light_max_contrast:g} L*"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>clusters of {html.escape(dataset)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} td{{padding:4px 10px;vertical-align:top}}
th{{text-align:left;padding:4px 10px}} tr:nth-child(even){{background:#f3f3f3}}</style></head>
<body><h1>Product-type clusters</h1>
<p>{len(clusters)} pairs of <code>{html.escape(dataset)}</code> ({size}); {rule}; {settings}.
Grids show up to {per_cluster} random members per cluster, cut out on grey.</p>
<table><tr><th>id</th><th>name</th><th>pairs</th><th>share</th><th>labelled members</th><th>members</th></tr>
{chr(10).join(sections)}
</table></body></html>
"""
    uri = storage.join(folder, "clusters.html")
    storage.write_bytes(uri, page.encode())
    return uri


def _remove_stale(folder: str, keep: set[str]) -> None:
    """Drop grids of clusters an earlier run had and this one has not (k went down)."""
    fs, path = storage.get_filesystem(folder)
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    except (FileNotFoundError, OSError):
        return
    for name in names:
        if name.startswith("cluster-") and name.endswith(".png") and name not in keep:
            fs.rm(f"{path.rstrip('/')}/{name}")


# --------------------------------------------------------------------------- the stage


@dataclass
class ClusterRun:
    """What ``cluster_and_write`` did."""

    clusters: pd.DataFrame  # id, cluster, cluster_name, light (manifest order)
    summary: pd.DataFrame   # cluster, cluster_name, size, share, light
    manifest: str           # manifest URI written
    report: str             # clusters.html URI


def cluster_and_write(
    dataset: str,
    config: ClusterConfig | None = None,
    labels: str | Mapping[str, Any] | None = None,
    *,
    progress: bool | None = None,
) -> ClusterRun:
    """Cluster a prepared dataset, write the columns into its manifest and the report.

    The config and counts also go into ``dataset.json`` under ``"clusters"``. A rerun
    replaces all of it.

    Example:
        >>> run = cluster_and_write("data/fashion-320", ClusterConfig(k=6))  # doctest: +SKIP
        >>> run.report  # doctest: +SKIP
        'data/fashion-320/clusters/clusters.html'
    """
    config = config or ClusterConfig()
    frame = read_manifest(dataset)
    named = load_labels(labels, frame)
    clusters = cluster_dataset(dataset, config, named or None, frame=frame, progress=progress)
    manifest = write_cluster_columns(dataset, clusters, frame)
    report = write_report(dataset, clusters, config, frame=frame, labels=named)
    summary = summarise(clusters, config)
    info = read_info(dataset)
    info["clusters"] = {
        "config": asdict(config),
        "labels": labels if isinstance(labels, str) else ("mapping" if labels else None),
        "counts": {str(r.cluster_name): int(r.size) for r in summary.itertuples()},
    }
    write_info(dataset, info)
    return ClusterRun(clusters=clusters, summary=summary, manifest=manifest, report=report)

