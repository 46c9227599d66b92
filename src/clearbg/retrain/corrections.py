"""What a retraining round learns from: the reviewers' pairs since the champion, held-out photos
kept out, merged with the champion's own training data into one prepared dataset.

Three steps, each writing files a rerun finds again:

1. :func:`gather` picks the feedback rows decided after a time and writes them as a CSV with
   absolute URIs (``clearbg prepare`` reads it).
2. ``clearbg prepare`` cleans and resizes them like the base dataset was (its ``dataset.json``).
3. :func:`merge` writes a dataset of the base's rows and the new ones, the new ones all in
   ``train``, after dropping every new pair whose photo is a held-out photo of the base (the
   same bytes, or a near-duplicate by pHash, as ``prepare`` defines them): the frozen test split
   must never see its own photos in training, nor the validation split that picks ``best.pt``.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass

import pandas as pd

from clearbg import storage
from clearbg.data.clean import hamming
from clearbg.data.manifest import DatasetError, read_info, read_manifest, size_dir, write_info, write_manifest
from clearbg.data.prepare import PrepareConfig
from clearbg.review.feedback import PAIR_COLUMNS, parse_iso, read_pairs

HELD_OUT = ("val", "test")


@dataclass(frozen=True)
class Gathered:
    """The feedback rows of one round: how many, and the latest decision among them."""

    rows: int
    until: float | None


def gather(feedback: str, since: float | None, out_csv: str) -> Gathered:
    """Write the feedback pairs decided after ``since`` to ``out_csv`` (image and mask as absolute URIs).

    Args:
        feedback: the feedback folder or ``s3://`` prefix (:mod:`clearbg.review.feedback`).
        since: seconds since the epoch; None takes every pair.
        out_csv: a local CSV path.

    Returns:
        How many rows were written, and the latest ``decided`` among them.
    """
    base = feedback if storage.is_remote(feedback) else os.path.abspath(feedback)
    rows = [r for r in read_pairs(feedback) if since is None or parse_iso(r["decided"]) > since]
    for row in rows:
        row["image"], row["mask"] = storage.join(base, row["image"]), storage.join(base, row["mask"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PAIR_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    storage.write_bytes(out_csv, buffer.getvalue().encode())
    return Gathered(rows=len(rows), until=max((parse_iso(r["decided"]) for r in rows), default=None))


@dataclass(frozen=True)
class Merged:
    """The merged dataset: its folder, the pairs from each side, and the new pairs left out
    (id -> why) because their photo is held out in the base."""

    dataset: str
    base: int
    added: int
    held_out: dict[str, str]


def merge(base: str, extra: str, out: str) -> Merged:
    """A prepared dataset with ``base``'s pairs (splits unchanged) and ``extra``'s in ``train``.

    Files are hard-linked where both sides are on one local disk, else copied; a file already in
    place is kept, and the manifest is written last, so a rerun finishes an interrupted merge.

    Raises:
        DatasetError: the two were prepared at different sizes, or ``base`` has neither a
            ``sha256`` nor a ``phash`` column to recognise its held-out photos by.
    """
    base_rows, extra_rows = read_manifest(base), read_manifest(extra)
    base_info, extra_info = read_info(base), read_info(extra)
    sizes = [tuple(s) for s in base_info["sizes"]]
    if sizes != [tuple(s) for s in extra_info["sizes"]]:
        raise DatasetError(f"{extra} was prepared at {extra_info['sizes']}, {base} at {base_info['sizes']}; "
                           "prepare the corrections with the base dataset's options")
    bits = PrepareConfig.from_json(base_info["config"]).clean.near_duplicate_bits
    held_out = _held_out(base_rows, extra_rows, bits, base)
    added = extra_rows[~extra_rows["id"].isin(held_out)].copy()
    added["split"] = "train"
    combined = pd.concat([base_rows.assign(origin=base_rows.get("origin", "base")), added.assign(origin="review")],
                         ignore_index=True)
    if combined["id"].duplicated().any():
        raise DatasetError(f"ids of {extra} repeat ids of {base}: {sorted(combined['id'][combined['id'].duplicated()])[:5]}")
    for width, height in sizes:
        folder = size_dir(width, height)
        for source, frame in ((base, base_rows), (extra, added)):
            for column in ("image", "mask"):
                for relative in frame[column]:
                    _place(storage.join(source, folder, relative), storage.join(out, folder, relative))
    write_info(out, {**base_info, "merged": {"base": base, "added_from": extra, "base_pairs": len(base_rows),
                                             "added_pairs": len(added), "held_out": held_out}})
    write_manifest(combined, out)
    return Merged(dataset=out, base=len(base_rows), added=len(added), held_out=held_out)


def _held_out(base_rows: pd.DataFrame, extra_rows: pd.DataFrame, bits: int, base: str) -> dict[str, str]:
    """New pairs whose photo is one of the base's validation or test photos (or nearly)."""
    if "sha256" not in base_rows and "phash" not in base_rows:
        raise DatasetError(f"the manifest of {base} has no sha256 or phash column, so its held-out photos cannot be "
                           "recognised among the corrections; prepare it again with this clearbg")
    held = base_rows[base_rows["split"].isin(HELD_OUT)]
    by_sha = dict(zip(held.get("sha256", []), held["id"]))
    hashes = list(zip(held.get("phash", []), held["id"]))
    found: dict[str, str] = {}
    for row in extra_rows.itertuples():
        if getattr(row, "sha256", None) in by_sha:
            found[row.id] = f"the same photo as held-out {by_sha[row.sha256]}"
            continue
        near = [i for h, i in hashes if bits and isinstance(h, str) and isinstance(getattr(row, "phash", None), str)
                and hamming(h, row.phash) <= bits]
        if near:
            found[row.id] = f"a near-duplicate of held-out {near[0]}"
    return found


def _place(source: str, target: str) -> None:
    if storage.is_remote(target):
        if not storage.exists(target):
            storage.write_bytes(target, storage.read_bytes(source))
        return
    if os.path.exists(target):
        return
    if not storage.is_remote(source):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.link(source, target)  # one disk: no copy (files are only ever replaced, never written in place)
            return
        except OSError:
            pass  # another disk, or links not allowed: copy
    storage.write_bytes(target, storage.read_bytes(source))  # atomic: a killed copy leaves no half file
