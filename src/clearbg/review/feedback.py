"""Reviewers' verdicts back into the data: a training-data folder ``clearbg prepare`` reads.

Layout of the folder (or ``s3://`` prefix)::

    images/<item>.<ext>   the photo's original bytes, as the gate received them
    masks/<item>.png      the mask a person approved: the model's (accepted) or theirs (corrected)
    pairs.csv             one row per pair: image, mask, id, split (``train``) and provenance
    rejected.csv          rejected items with their reason (no pair: never trained on)

``clearbg prepare FOLDER/pairs.csv --out DATASET`` reads it as it is (the CSV layout: paths are
relative to the CSV's folder; the other columns go into the manifest), so every prepared pair
keeps where it came from: the source photo, the model version whose mask was reviewed, the
action (``accept`` or ``correct``), the reviewer, when (UTC), the seconds spent and the strokes.

The queue's database is the truth and this folder is derived from it: :func:`write_feedback`
writes the files of decisions not yet in ``pairs.csv`` / ``rejected.csv`` and then rewrites
both CSVs whole from the database (atomically), so a rerun adds what is new, a crash between the
files and the CSV loses nothing, and two writers at once can at worst leave a CSV one decision
behind until the next write.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from pathlib import PurePosixPath

from clearbg import storage
from clearbg.errors import StorageError
from clearbg.review.queue import Effort, Item, ReviewQueue

PAIRS_CSV = "pairs.csv"
REJECTED_CSV = "rejected.csv"
PAIR_COLUMNS = ("id", "image", "mask", "split", "source", "model", "action", "reviewer", "decided", "seconds",
                "strokes", "score", "item")
REJECTED_COLUMNS = ("item", "source", "model", "reason", "reviewer", "decided", "seconds", "strokes", "score", "photo")
ACTIONS = {"accepted": "accept", "corrected": "correct"}


@dataclass(frozen=True)
class FeedbackReport:
    """What :func:`write_feedback` did.

    Attributes:
        out: the folder or prefix.
        pairs, rejected: rows in ``pairs.csv`` and ``rejected.csv`` now.
        added: pairs whose files were written by this call.
    """

    out: str
    pairs: int
    rejected: int
    added: int


def write_feedback(queue: ReviewQueue, out: str) -> FeedbackReport:
    """Bring the training-data folder ``out`` up to date with the queue's decisions.

    Args:
        queue: the review queue.
        out: a local folder or an ``s3://`` prefix.

    Returns:
        A :class:`FeedbackReport`.

    Raises:
        StorageError: a file could not be read from the queue's store or written to ``out``.
        ReviewError: the queue cannot be reached.

    Example:
        >>> with ReviewQueue("review/queue.db") as queue:                # doctest: +SKIP
        ...     write_feedback(queue, "data/feedback").pairs
        12
    """
    efforts = {e.item: e for e in queue.efforts()}
    written = _ids(out)
    pairs, rejected, added = [], [], 0
    for status in ("accepted", "corrected", "rejected"):
        for item in queue.items(status):
            effort = efforts.get(item.id)
            if status == "rejected":
                rejected.append(_rejected_row(item, effort))
                continue
            row = _pair_row(item, effort)
            if item.id not in written:
                storage.write_bytes(storage.join(out, row["image"]), queue.read(item.photo))
                storage.write_bytes(storage.join(out, row["mask"]), queue.read(item.corrected or item.mask))
                added += 1
            pairs.append(row)
    # Oldest decision first: what a person reads, and what "since the champion" filters on.
    pairs.sort(key=lambda r: (r["decided"], r["id"]))
    rejected.sort(key=lambda r: (r["decided"], r["item"]))
    _write_csv(storage.join(out, PAIRS_CSV), PAIR_COLUMNS, pairs)
    _write_csv(storage.join(out, REJECTED_CSV), REJECTED_COLUMNS, rejected)
    return FeedbackReport(out=out, pairs=len(pairs), rejected=len(rejected), added=added)


def read_pairs(out: str) -> list[dict[str, str]]:
    """The rows of ``out/pairs.csv`` (none when it does not exist yet)."""
    uri = storage.join(out, PAIRS_CSV)
    if not storage.exists(uri):
        return []
    return list(csv.DictReader(io.StringIO(storage.read_bytes(uri).decode("utf-8"))))


def iso(seconds: float | None) -> str:
    """Seconds since the epoch as ISO 8601 UTC (what the CSVs hold); "" for None.

    Example:
        >>> iso(0.0)
        '1970-01-01T00:00:00.000Z'
    """
    if seconds is None:
        return ""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> float:
    """The inverse of :func:`iso`."""
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc).timestamp()


def _pair_row(item: Item, effort: Effort | None) -> dict[str, str]:
    suffix = PurePosixPath(item.photo).suffix or ".bin"
    return {"id": item.id, "image": f"images/{item.id}{suffix}", "mask": f"masks/{item.id}.png", "split": "train",
            "source": item.source, "model": item.model, "action": ACTIONS[item.status],
            **_provenance(item, effort), "score": f"{item.score:.6f}", "item": item.id}


def _rejected_row(item: Item, effort: Effort | None) -> dict[str, str]:
    return {"item": item.id, "source": item.source, "model": item.model, "reason": item.reason,
            **_provenance(item, effort), "score": f"{item.score:.6f}", "photo": item.photo}


def _provenance(item: Item, effort: Effort | None) -> dict[str, str]:
    seconds = effort.seconds if effort is not None else None
    strokes = effort.strokes if effort is not None else None
    return {"reviewer": item.reviewer or "", "decided": iso(item.decided),
            "seconds": "" if seconds is None else f"{seconds:.1f}", "strokes": "" if strokes is None else str(strokes)}


def _ids(out: str) -> set[str]:
    try:
        return {row["id"] for row in read_pairs(out)}
    except (KeyError, UnicodeDecodeError) as err:
        raise StorageError(f"{storage.join(out, PAIRS_CSV)} is not a clearbg feedback table ({err}); give the "
                           "feedback a folder of its own") from err


def _write_csv(uri: str, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    storage.write_bytes(uri, buffer.getvalue().encode("utf-8"))
