"""The batch job's memory: an append-only journal of finished items and the results table.

An item is journaled only after its output is in place (an atomic local rename or a single S3
PUT), so a crash at any moment leaves either no output and no entry (the rerun does the item)
or both. Locally the journal is one file, ``DST/.batch/journal.jsonl``, appended and fsync'd
after every batch; a line cut short by ``kill -9`` is trimmed on the next open. Object stores
cannot append, so on s3:// each batch's lines are one object ``DST/.batch/journal/part-*.jsonl``
(a PUT is atomic: a batch is journaled whole or not at all).

Resuming keeps the relpaths already done in a set: tens of bytes per item, so millions of
items fit in memory easily; the listing itself is never held.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Any, Iterable, Iterator

import pandas as pd

from clearbg import imageio, storage
from clearbg.removal.record import RESULT_COLUMNS

BATCH_DIR = ".batch"
RESULTS_NAME = "results.parquet"


class Journal:
    """Finished items of one batch output folder (local path or s3:// prefix).

    Args:
        out: the batch's output folder.

    Example:
        >>> journal = Journal("cutouts/")                       # doctest: +SKIP
        >>> journal.add([{"relpath": "a.jpg", "status": "ok"}])  # doctest: +SKIP
        >>> "a.jpg" in journal.done()                           # doctest: +SKIP
        True
    """

    def __init__(self, out: str) -> None:
        self.out = out
        self.root = storage.join(out, BATCH_DIR)
        self.remote = storage.is_remote(out)
        self._file = None

    # ------------------------------------------------------------------ reading

    def records(self) -> Iterator[dict[str, Any]]:
        """Every journaled record, oldest first (an item retried later appears again)."""
        for chunk in self._chunks():
            for line in chunk.splitlines():
                if line.strip():
                    yield json.loads(line)

    def done(self, *, retry_failed: bool = False) -> set[str]:
        """Relpaths to skip: those whose latest record is ok, plus failed ones unless retrying."""
        latest: dict[str, bool] = {}
        for record in self.records():
            latest[record["relpath"]] = record["status"] == "ok"
        return {relpath for relpath, ok in latest.items() if ok or not retry_failed}

    def _chunks(self) -> Iterator[str]:
        if self.remote:
            fs, path = storage.get_filesystem(self.root)
            try:
                names = sorted(fs.ls(storage.join(path, "journal"), detail=False))
            except FileNotFoundError:
                return
            for name in names:
                if posixpath.basename(name).startswith("part-"):
                    yield fs.cat_file(name).decode()
            return
        path = storage.join(self.root, "journal.jsonl")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                yield f.read()

    # ------------------------------------------------------------------ writing

    def open(self) -> None:
        """Get ready to append: trim a last line cut short by a crash, remove stray temp files."""
        if self.remote:
            return
        os.makedirs(self.root, exist_ok=True)
        path = storage.join(self.root, "journal.jsonl")
        if os.path.exists(path):
            with open(path, "rb+") as f:
                f.truncate(f.read().rfind(b"\n") + 1)  # a no-op unless the last line is cut short
            remove_temp_files(self.out)
        self._file = open(path, "a", encoding="utf-8")

    def add(self, records: list[dict[str, Any]]) -> None:
        """Journal finished items (call after their outputs are in place); durable on return."""
        if not records:
            return
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        if self.remote:
            name = f"part-{pd.Timestamp.now('UTC').strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.jsonl"
            storage.write_bytes(storage.join(self.root, "journal", name), lines.encode())
            return
        self._file.write(lines)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # ------------------------------------------------------------------ results

    def write_results(self, extra: Iterable[dict[str, Any]] = ()) -> tuple[str, list[dict[str, Any]]]:
        """Compact the journal into ``DST/results.parquet``: one row per item, its latest record.

        Args:
            extra: rows that are not journaled (this run's listing failures), added last.

        Returns:
            The URI written, and its failed rows in relpath order.
        """
        latest: dict[str, dict[str, Any]] = {}
        for record in [*self.records(), *extra]:
            latest[record["relpath"]] = record
        rows = [latest[k] for k in sorted(latest)]
        table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
        table["review"] = table["review"].eq(True)  # journals from before the gate lack it (None -> False)
        uri = storage.join(self.out, RESULTS_NAME)
        storage.write_bytes(uri, table.to_parquet(index=False))
        return uri, [row for row in rows if row["status"] != "ok"]


def remove_temp_files(out: str) -> int:
    """Delete temp files a killed local run left in ``out``.

    Only names made by ``imageio.temp_name`` (``.clearbg-tmp-<uuid>-<name>``) are touched: a
    user's own ``x.jpg.tmp`` or ``a.1.tmp`` in the output folder stays.

    Returns:
        How many were removed.
    """
    removed = 0
    for folder, _dirs, files in os.walk(out):
        for name in files:
            if imageio.is_temp_name(name):
                os.remove(os.path.join(folder, name))
                removed += 1
    return removed
