"""The manifest: one table, one row per pair, the contract between data stages.

A prepared dataset is a folder (local or ``s3://``)::

    DATASET/
      manifest.parquet     one row per kept pair (columns below)
      excluded.csv         one row per dropped pair: id, image, mask, reason, detail
      dataset.json         how it was made: sizes, resize mode, cleaning options, counts
      320x320/images/<id>.png   the photo, RGB, resized
      320x320/masks/<id>.png    the mask, L, 0/255 (grey values only with soft masks)

Columns of ``manifest.parquet`` (later stages add their own, e.g. ``cluster``):

    id            unique name of the pair (the source stem)
    image, mask   paths relative to a size folder: ``images/<id>.png``, ``masks/<id>.png``
    src_image, src_mask   where the pair came from (path or URI); the source is never modified
    src_width, src_height size of the upright source photo
    fg_fraction   share of foreground pixels in the source mask
    split         train / val / test (from a CSV source, else by a stable hash of the id)
    + any extra columns of a CSV source (e.g. ``product_type``)

CSV works everywhere Parquet does (``manifest.csv``); Parquet is the default because it keeps
types and reads a million rows in a blink.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd

from clearbg import storage
from clearbg.errors import ClearbgError

__all__ = [
    "DATASET_INFO",
    "EXCLUDED",
    "MANIFEST",
    "DatasetError",
    "read_info",
    "read_manifest",
    "size_dir",
    "write_info",
    "write_manifest",
    "write_table_csv",
]

MANIFEST = "manifest.parquet"
EXCLUDED = "excluded.csv"
DATASET_INFO = "dataset.json"


class DatasetError(ClearbgError):
    """A dataset folder or manifest is missing, malformed or of the wrong kind."""


def size_dir(width: int, height: int) -> str:
    """Folder name of one training size: ``size_dir(320, 320) == "320x320"``."""
    return f"{width}x{height}"


def _manifest_uri(location: str) -> str:
    """``location`` is a dataset folder or a manifest file (.parquet or .csv)."""
    lower = location.lower()
    if lower.endswith((".parquet", ".csv")):
        return location
    return storage.join(location, MANIFEST)


def read_manifest(location: str) -> pd.DataFrame:
    """Read a manifest from a dataset folder (its ``manifest.parquet``) or a .parquet/.csv file.

    Raises:
        DatasetError: It is missing, unreadable, or has no ``id`` column.
    """
    uri = _manifest_uri(location)
    if not storage.exists(uri):
        raise DatasetError(
            f"no manifest at {uri}: is {location} a dataset made by `clearbg prepare SRC --out DIR`?"
        )
    data = storage.read_bytes(uri)
    try:
        if uri.lower().endswith(".csv"):
            frame = pd.read_csv(io.BytesIO(data), dtype={"id": str}, keep_default_na=False, na_values=[""])
        else:
            frame = pd.read_parquet(io.BytesIO(data))
    except Exception as err:  # noqa: BLE001 - pandas/pyarrow raise many types on bad files
        raise DatasetError(f"cannot read manifest {uri}: {err}") from err
    if "id" not in frame.columns:
        raise DatasetError(f"manifest {uri} has no 'id' column (columns: {', '.join(frame.columns)})")
    return frame


def write_manifest(frame: pd.DataFrame, location: str) -> str:
    """Write ``frame`` atomically as the manifest of ``location`` (a folder or a file path).

    Returns:
        The URI written.
    """
    uri = _manifest_uri(location)
    buffer = io.BytesIO()
    if uri.lower().endswith(".csv"):
        frame.to_csv(buffer, index=False)
    else:
        frame.to_parquet(buffer, index=False)
    storage.write_bytes(uri, buffer.getvalue())
    return uri


def write_table_csv(frame: pd.DataFrame, uri: str) -> None:
    """Write any table as CSV atomically (reports such as ``excluded.csv``)."""
    storage.write_bytes(uri, frame.to_csv(index=False).encode())


def read_info(dataset: str) -> dict[str, Any]:
    """The ``dataset.json`` of a prepared dataset (sizes, options, counts)."""
    uri = storage.join(dataset, DATASET_INFO)
    if not storage.exists(uri):
        raise DatasetError(f"no {DATASET_INFO} in {dataset}: prepare it with `clearbg prepare SRC --out {dataset}`")
    try:
        return json.loads(storage.read_bytes(uri))
    except ValueError as err:
        raise DatasetError(f"{uri} is not valid JSON: {err}") from err


def write_info(dataset: str, info: dict[str, Any]) -> None:
    storage.write_bytes(storage.join(dataset, DATASET_INFO), json.dumps(info, indent=2, sort_keys=True).encode())
