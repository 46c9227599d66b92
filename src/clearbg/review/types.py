"""Product types corrected by a person: move photos between a prepared dataset's clusters.

``clearbg cluster`` groups photos by product type automatically, and "not fully accurately"; the
types page of ``clearbg review --dataset DATASET`` shows each type as a grid of photos and lets
a person move photos to the right type. A move rewrites the manifest's ``cluster`` and
``cluster_name`` (what balancing, per-type validation and evaluation, and hence the promotion
gate, group by) and records who moved it, when, and the type it had before the first move
(``type_by``, ``type_at``, ``type_was``). Rerunning ``clearbg cluster`` recomputes every type and
drops these corrections: correct after clustering.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from clearbg import storage
from clearbg.data.manifest import DatasetError, read_info, read_manifest, size_dir, write_manifest
from clearbg.errors import ReviewError
from clearbg.imageio import encode_image, open_image

PROVENANCE = ("type_by", "type_at", "type_was")
THUMB_PX = 160
_LOCK = threading.Lock()  # one read-modify-write of a manifest at a time in this process


@dataclass(frozen=True)
class TypeGroup:
    """One product type: its cluster number, name and how many photos it holds."""

    cluster: int
    name: str
    count: int


def groups(dataset: str) -> tuple[list[TypeGroup], pd.DataFrame]:
    """The dataset's types and its rows (``id``, ``cluster``, ``cluster_name`` and provenance).

    Raises:
        DatasetError: the dataset has not been clustered (``clearbg cluster`` adds the types).
    """
    frame = read_manifest(dataset)
    if "cluster" not in frame or "cluster_name" not in frame:
        raise DatasetError(f"{dataset} has no product types yet: run `clearbg cluster {dataset}` first")
    for column in PROVENANCE:
        frame[column] = frame[column].fillna("").astype(str) if column in frame else ""
    summary = frame.groupby(["cluster", "cluster_name"]).size().reset_index(name="count").sort_values("cluster")
    found = [TypeGroup(int(r.cluster), str(r.cluster_name), int(r.count)) for r in summary.itertuples()]
    return found, frame


def move(dataset: str, ids: list[str], to: str, reviewer: str) -> int:
    """Give the photos ``ids`` the product type named ``to``, recording who and when.

    A name not among the types makes a new type (the next cluster number).

    Returns:
        How many photos changed type (those already of type ``to`` do not count).

    Raises:
        ReviewError: no reviewer, no type name, or an id not in the dataset.
    """
    if not reviewer.strip() or not to.strip():
        raise ReviewError("moving photos between types needs a reviewer name and a type name")
    with _LOCK:
        known, frame = groups(dataset)
        missing = sorted(set(ids) - set(frame["id"]))
        if missing:
            raise ReviewError(f"{len(missing)} of the photos are not in {dataset}: {', '.join(missing[:5])}")
        by_name = {g.name: g.cluster for g in known}
        cluster = by_name.get(to, max(by_name.values(), default=-1) + 1)
        rows = frame["id"].isin(ids) & (frame["cluster_name"].astype(str) != to)
        first = rows & (frame["type_was"].fillna("") == "")
        frame.loc[first, "type_was"] = frame.loc[first, "cluster_name"].astype(str)
        frame.loc[rows, "cluster"] = cluster
        frame.loc[rows, "cluster_name"] = to
        frame.loc[rows, "type_by"] = reviewer.strip()
        frame.loc[rows, "type_at"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        frame["cluster"] = frame["cluster"].astype("int64")
        write_manifest(frame, dataset)  # atomic: readers see the old manifest or the new one
        return int(rows.sum())


def thumbnail(dataset: str, frame: pd.DataFrame, index: int) -> bytes:
    """A JPEG of row ``index``'s photo, at most ``THUMB_PX`` a side, in its source's proportions.

    Read from the dataset's own prepared image (never a path from a request), stretched back to
    the source photo's aspect when the dataset was prepared with ``stretch``.

    Raises:
        ReviewError: no such row.
    """
    if not 0 <= index < len(frame):
        raise ReviewError(f"no photo number {index} in {dataset}")
    row = frame.iloc[index]
    width, height = read_info(dataset)["sizes"][0]
    image = open_image(storage.read_bytes(storage.join(dataset, size_dir(width, height), str(row["image"]))))
    aspect = float(row["src_width"]) / float(row["src_height"]) if "src_width" in row and row["src_height"] else 1.0
    scale = THUMB_PX / max(aspect, 1.0)
    size = (max(1, round(scale * aspect)), max(1, round(scale)))
    return encode_image(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), "jpg", quality=85)


def table(known: list[TypeGroup], frame: pd.DataFrame) -> dict:
    """What the types page shows: the types, and each photo's row number, id and type."""
    return {"types": [{"cluster": g.cluster, "name": g.name, "count": g.count} for g in known],
            "photos": [{"index": int(i), "id": str(r.id), "type": str(r.cluster_name), "moved": bool(r.type_by)}
                       for i, r in zip(np.arange(len(frame)), frame.itertuples())]}
