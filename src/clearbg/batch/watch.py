"""A studio hot folder: process photos as the capture software drops them into a folder.

The folder is polled (portable: local disks, network shares and mounted buckets behave the
same; no inotify). A photo is taken once it is completely written: its size and modification
time have not changed for ``settle`` seconds. Each photo goes through the same per-photo
pipeline as ``clearbg batch`` and is recorded in the same journal (``OUT/.batch/``), so a
restarted watcher never processes a photo twice. A photo that fails is reported, recorded and
moved aside into ``failed_dir`` with a ``.error.txt`` beside it, so it is not retried forever;
a fixed copy put back into the folder under the same name is processed.

Example:
    >>> stop = threading.Event()                                                    # doctest: +SKIP
    >>> watch_folder("incoming/", "cutouts/", Predictor("u2netp"), stop=stop)        # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clearbg import storage
from clearbg.batch.journal import Journal
from clearbg.batch.local import output_for
from clearbg.errors import StorageError, printable
from clearbg.imageio import atomic_write_bytes
from clearbg.inference.compose import OutputOptions
from clearbg.inference.predictor import Predictor
from clearbg.removal.pipeline import check_output_location, remove_stream
from clearbg.review.gate import ReviewSettings, build_gate

FAILED_DIR = ".failed"  # inside the watched folder: dot-folders are never listed as input


@dataclass
class WatchSummary:
    """What a watcher did before it stopped."""

    ok: int = 0
    failed: int = 0
    polls: int = 0


def watch_folder(
    folder: str,
    out: str,
    predictor: Predictor,
    *,
    options: OutputOptions = OutputOptions(),
    fmt: str = "png",
    quality: int = 95,
    workers: int = 2,
    interval: float = 1.0,
    settle: float = 2.0,
    failed_dir: str | None = None,
    max_pixels: int | None = None,
    review: ReviewSettings | None = None,
    stop: threading.Event | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> WatchSummary:
    """Process photos appearing in ``folder`` into ``out`` until ``stop`` is set.

    Args:
        folder: the local folder the capture software writes into.
        out: output folder (mirrors ``folder``'s tree, as ``clearbg batch`` does).
        predictor, options, fmt, quality, workers, max_pixels: as for ``run_batch``.
        interval: seconds between polls.
        settle: seconds a photo's size and modification time must stay unchanged before it is
            taken (the capture software may still be writing it).
        failed_dir: where failed photos are moved (default ``folder/.failed``).
        review: the quality gate, as for ``run_batch``: photos under the confidence threshold go
            to the review queue as they are processed.
        stop: set it to stop after the photos in hand are done (SIGINT/SIGTERM in the CLI).
        on_result: called with each photo's result record (status, error, output ...).

    Returns:
        A ``WatchSummary``.

    Raises:
        StorageError: ``folder`` is not a local folder, or ``out`` overlaps it.
    """
    if storage.is_remote(folder) or not Path(folder).is_dir():
        raise StorageError(f"{folder}: the hot folder must be an existing local folder "
                           "(for a bucket, run `clearbg batch` on a schedule)")
    check_output_location([folder], out, fmt, mirrored=True)
    stop = stop or threading.Event()
    gate = build_gate(predictor, review, job=f"watch {out}")
    failed_root = Path(failed_dir) if failed_dir else Path(folder) / FAILED_DIR
    journal = Journal(out)
    done = journal.done(retry_failed=True)  # a failed photo was moved aside: its name may come back, fixed
    journal.open()
    seen: dict[str, tuple[int, int, float]] = {}  # relpath -> (size, mtime_ns, unchanged since)
    summary = WatchSummary()
    try:
        while not stop.is_set():
            ready = _settled(folder, done, seen, settle)
            summary.polls += 1
            if ready:
                items = ((ref, output_for(out, ref, fmt)) for ref in ready)
                for records in remove_stream(items, predictor, options=options, fmt=fmt, quality=quality,
                                             workers=workers, max_pixels=max_pixels, gate=gate):
                    for record in records:
                        if record["status"] == "failed":
                            error, moved = _move_aside(record, failed_root)
                            record = {**record, "error": error}
                            summary.failed += 1
                            if not moved:  # still in the folder: do not try it again at every poll
                                done.add(record["relpath"])
                        else:
                            summary.ok += 1
                            done.add(record["relpath"])
                        seen.pop(record["relpath"], None)
                        if on_result is not None:
                            on_result(record)
                    journal.add(records)
                continue  # more may have arrived meanwhile: look again at once
            stop.wait(interval)
    finally:
        journal.close()
        journal.write_results()
    return summary


def _settled(folder: str, done: set[str], seen: dict[str, tuple[int, int, float]],
             settle: float) -> list[storage.ImageRef]:
    """Photos not done yet whose size and mtime have held still for ``settle`` seconds."""
    now = time.monotonic()
    ready, present = [], set()
    for ref in storage.iter_images([folder], on_error=lambda uri, err: None):  # reported at the next poll too
        if ref.relpath in done:
            continue
        present.add(ref.relpath)
        try:
            st = os.stat(ref.uri)
        except OSError:  # gone between listing and stat (moved by the studio): look next time
            continue
        size, mtime = st.st_size, st.st_mtime_ns
        previous = seen.get(ref.relpath)
        if previous is None or previous[:2] != (size, mtime):
            seen[ref.relpath] = (size, mtime, now)
        elif size > 0 and now - previous[2] >= settle:
            ready.append(ref)
    for relpath in set(seen) - present:
        del seen[relpath]
    return ready


def _move_aside(record: dict[str, Any], failed_root: Path) -> tuple[str, bool]:
    """Move a failed photo into ``failed_root`` (keeping its relative path) with its reason in
    ``NAME.error.txt``; returns the error, extended with where the photo went, and whether it moved."""
    source = Path(record["uri"])
    target = failed_root / record["relpath"]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        atomic_write_bytes(target.with_name(target.name + ".error.txt"), (record["error"] + "\n").encode())
    except OSError as err:
        return f"{record['error']} (could not move it aside to {printable(str(target))}: {err})", False
    return f"{record['error']} (moved to {printable(str(target))})", True
