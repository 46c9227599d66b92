"""Run a batch on this machine: stream the listing, decode ahead, infer in batches, write behind.

Memory stays flat however many photos there are: the listing is a generator, at most
``2 * batch_size`` photos are decoded ahead of the model and at most as many outputs wait to
be written; only the set of finished relpaths grows (see ``journal``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from tqdm import tqdm

from clearbg import storage
from clearbg.batch.journal import Journal
from clearbg.errors import StorageError
from clearbg.removal.pipeline import FORMATS, check_output_location, count_photos, photo_record, remove_stream
from clearbg.inference.compose import OutputOptions
from clearbg.inference.predictor import Predictor
from clearbg.review.gate import ReviewSettings, build_gate


@dataclass
class BatchSummary:
    """What one run did (the full per-item table is ``results``).

    ``ok``, ``failed`` and ``skipped`` count this run; ``failures`` are the rows of ``results``
    still failed after it, this run's or earlier ones' (a rerun skips those unless retrying).
    """

    ok: int
    failed: int
    skipped: int
    seconds: float
    results: str
    failures: list[dict[str, Any]] = field(default_factory=list)
    reviewed: int = 0  # photos this run sent to the review queue

    @property
    def rate(self) -> float:
        done = self.ok + self.failed
        return done / self.seconds if self.seconds else 0.0


def output_for(out: str, ref: storage.ImageRef, fmt: str) -> str:
    """``DST/<relpath with its suffix replaced by fmt>``: the input tree is mirrored, so equal
    file names in different folders never collide.

    Example:
        >>> output_for("cut", storage.ImageRef("photos/shoes/a.jpg", "shoes/a.jpg"), "png")
        'cut/shoes/a.png'
    """
    return storage.join(out, ref.relpath.rpartition("/")[0], f"{ref.stem}.{fmt}")


def batch_inputs(inputs: Sequence[str],
                 on_error: storage.OnError | None = None) -> Iterator[tuple[storage.ImageRef, str]]:
    """The photos of a batch job, streaming, each with "" or why it cannot have its own output.

    One SRC folder is mirrored into DST; with several, each folder keeps its name (``cp -r a b
    DST``): ``DST/a/...``, ``DST/b/...``, so equal names in two shoots never meet. Two inputs
    that would still write the same output (folders or files of the same name) are refused
    before anything runs. Within a folder, ``x.jpg`` and ``x.png`` would both write ``x.png``:
    the second is answered with an error naming the first. Listings come in name order, so
    every name with the stem ``x`` falls in the run of names starting with ``x.``; only the
    stems whose run is still open are remembered, and memory stays flat. ``on_error`` is told
    about what cannot be listed (see ``storage.iter_images``).

    Raises:
        StorageError: two inputs would write the same outputs.

    Example:
        >>> [(r.relpath, why) for r, why in batch_inputs(["shoot1/", "shoot2/"])]  # doctest: +SKIP
        [('shoot1/a.jpg', ''), ('shoot2/a.jpg', '')]
    """
    inputs = list(inputs)
    names = [item.rstrip("/").rsplit("/", 1)[-1] for item in inputs]
    tops: dict[str, str] = {}
    for item, name in zip(inputs, names):
        stem, dot, suffix = name.rpartition(".")
        key = stem if dot and stem and f".{suffix.lower()}" in storage.IMAGE_SUFFIXES else name
        if key in tops:
            raise StorageError(f"{tops[key]} and {item} would write the same outputs; "
                               "rename one, or run them into different --out folders")
        tops[key] = item
    return _listing(inputs, names, on_error)  # a generator: the check above runs now, the listing when iterated


def _listing(inputs: Sequence[str], names: list[str],
             on_error: storage.OnError | None) -> Iterator[tuple[storage.ImageRef, str]]:
    open_stems: dict[str, dict[str, str]] = {}  # folder -> {stem: uri} whose name run is still open
    for item, top in zip(inputs, names):
        for ref in storage.iter_images([item], on_error):
            if len(inputs) > 1 and ref.relpath != top:  # a photo in folder `top`, not the file `top` itself
                ref = storage.ImageRef(ref.uri, f"{top}/{ref.relpath}")
            folder, _, name = ref.relpath.rpartition("/")
            stems = open_stems.setdefault(folder, {})
            for stem in [s for s in stems if not name.startswith(f"{s}.")]:
                del stems[stem]
            if ref.stem in stems:
                yield ref, f"its output {ref.stem}.* is already written for {stems[ref.stem]} (same name, other suffix)"
                continue
            stems[ref.stem] = ref.uri
            yield ref, ""


def open_run(inputs: Sequence[str], out: str, fmt: str, *, retry_failed: bool, counts: dict[str, int],
             unlisted: list[dict[str, Any]]) -> tuple[Journal, Iterator[storage.ImageRef]]:
    """Start a batch job: check the inputs and ``out``, open its journal, list what is left to do.

    The listing skips photos the journal has (counted as ``skipped``) and journals photos whose
    output name is taken (``batch_inputs``) as ``failed``, so both engines treat them alike.
    What cannot be listed (a folder without permission, a missing input, a broken link that may
    have been a folder) is counted as ``failed`` and appended to ``unlisted`` as a results row,
    not journaled: every run lists again, so it is reported for as long as it lasts.

    Returns:
        (the open journal, a lazy iterator over the photos still to process).

    Raises:
        StorageError: ``out`` would overwrite an input or be read back as one, or two inputs
            would write the same outputs; nothing was written.
    """
    inputs = list(inputs)
    check_output_location(inputs, out, fmt, mirrored=True)
    several = len(inputs) > 1

    def report(uri: str, err: StorageError) -> None:
        item = next((i for i in inputs if f"{uri}/".startswith(i.rstrip("/") + "/")), "")
        below = uri[len(item.rstrip("/")):].strip("/") if item else uri
        top = item.rstrip("/").rsplit("/", 1)[-1] if several else ""
        relpath = "/".join(part for part in (top, below) if part) or "."
        unlisted.append(photo_record(storage.ImageRef(uri, relpath), "failed", 0.0, error=str(err)))
        counts["failed"] += 1

    listing = batch_inputs(inputs, report)
    journal = Journal(out)
    done = journal.done(retry_failed=retry_failed)
    journal.open()

    def pending() -> Iterator[storage.ImageRef]:
        for ref, clash in listing:
            if ref.relpath in done:
                counts["skipped"] += 1
            elif clash:
                journal.add([photo_record(ref, "failed", 0.0, error=clash)])
                counts["failed"] += 1
            else:
                yield ref

    return journal, pending()


def run_batch(
    inputs: Sequence[str],
    out: str,
    predictor: Predictor,
    *,
    options: OutputOptions = OutputOptions(),
    fmt: str = "png",
    quality: int = 95,
    workers: int = 2,
    retry_failed: bool = False,
    max_pixels: int | None = None,
    progress: bool | None = None,
    review: ReviewSettings | None = None,
) -> BatchSummary:
    """Process every photo under ``inputs`` into ``out``, resumably.

    Items already in ``out``'s journal are skipped (failed ones too, unless ``retry_failed``).
    Each output is written, then journaled; at the end the journal is compacted into
    ``out/results.parquet`` (relpath, uri, status ok|failed, error, confidence, seconds, output,
    review), with a failed row for each folder or input this run could not list.

    Args:
        inputs: folders, files or s3:// prefixes (see ``batch_inputs`` for how they map to ``out``).
        out: local folder or s3:// prefix.
        predictor: the loaded model; its ``batch_size`` photos go through it at once.
        workers: threads reading/decoding ahead and encoding/writing behind.
        retry_failed: attempt items that failed in an earlier run again.
        review: the quality gate's options (``clearbg.review.gate``): every mask gets a confidence
            when the model has a calibration; with a threshold, photos under it go to the review
            queue (once, however often the batch is rerun).

    Returns:
        A ``BatchSummary``.

    Raises:
        StorageError: ``out`` overlaps an input (``check_output_location``), two inputs would
            write the same outputs, or the journal/results cannot be written.
        CalibrationError, ReviewError: a review threshold without a calibration; the queue
            cannot be opened (before any photo is processed).

    Example:
        >>> run_batch(["photos/"], "cut/", Predictor("u2netp")).ok  # doctest: +SKIP
        24
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    started = time.perf_counter()
    gate = build_gate(predictor, review, job=f"batch {out}")
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    reviewed = 0
    unlisted: list[dict[str, Any]] = []
    journal, pending = open_run(inputs, out, fmt, retry_failed=retry_failed, counts=counts, unlisted=unlisted)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(desc="batch", unit="img", disable=not show, dynamic_ncols=True)
    stop_counting = count_photos(inputs, bar) if show else None
    try:
        items = ((ref, output_for(out, ref, fmt)) for ref in pending)
        for records in remove_stream(items, predictor, options=options, fmt=fmt, quality=quality,
                                     workers=workers, max_pixels=max_pixels, gate=gate):
            journal.add(records)
            for record in records:
                counts[record["status"]] += 1
                reviewed += record["review"]
            # counts also holds photos the listing settled (done earlier, name taken): all advance the bar
            bar.update(sum(counts.values()) - bar.n)
        bar.update(sum(counts.values()) - bar.n)  # photos the listing settled after the last model batch
        bar.total = bar.n  # the listing is exhausted, so this is exact even if the counter lags behind
    finally:
        if stop_counting is not None:
            stop_counting.set()
        journal.close()
        bar.close()
    results, failures = journal.write_results(unlisted)
    return BatchSummary(counts["ok"], counts["failed"], counts["skipped"], time.perf_counter() - started, results,
                        failures, reviewed)
