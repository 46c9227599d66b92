"""Remove backgrounds of every photo under some inputs (files, folders, s3:// prefixes).

Reading and decoding run in a small thread pool ahead of the model, and encoding and writing
behind it, so the two CPU cores stay on the network most of the time. A bad photo is recorded
and skipped; the good ones are still written. Each output is written atomically.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from clearbg import imageio, storage
from clearbg.errors import ClearbgError, StorageError
from clearbg.inference.compose import OutputOptions, compose
from clearbg.inference.predictor import Prediction, Predictor
from clearbg.quality.gate import QualityGate
from clearbg.removal.record import PhotoResult

FORMATS = ("png", "jpg", "webp")


@dataclass
class Failure:
    uri: str
    reason: str


@dataclass
class RemoveReport:
    """What a run did: outputs written, photos skipped as already done, failures with reasons."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    reviewed: list[str] = field(default_factory=list)  # photos sent to the review queue
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def output_uri(out_dir: str, ref: storage.ImageRef, fmt: str) -> str:
    """``DIR/<stem>.<format>``."""
    return storage.join(out_dir, f"{ref.stem}.{fmt}")


def check_output_location(inputs: Sequence[str], out: str, fmt: str, *, mirrored: bool = False) -> None:
    """Refuse an output location that would write over an input or be read back as one.

    Outputs of an input folder land in its destination: ``out`` itself, or with ``mirrored``
    and several inputs (``clearbg batch``: ``DST/<folder name>/...``) ``out/<folder name>``. A
    destination that is the input folder overwrites its photos (an RGBA ``p.png`` by its own
    cutout), and one inside it is walked again by the next run, which would cut out its own
    cutouts: both are refused. A hidden folder (``photos/.cut``) is fine: walks skip names
    starting with ``"."``. A file named as an input is refused only when its own output would
    replace it. Runs before anything is written.

    Raises:
        StorageError: the message names the input and the output and says what to do.

    Example:
        >>> check_output_location(["photos/"], "photos/cut", "png")  # doctest: +SKIP
        Traceback (most recent call last):
        StorageError: --out photos/cut is inside the input folder photos/: ...
    """
    kind, target = storage.location(out)
    for item in inputs:
        name = item.rstrip("/").rsplit("/", 1)[-1]
        where, place = storage.location(item)
        if where != kind:
            continue
        if not storage.is_folder(item):
            if storage.location(output_uri(out, storage.ImageRef(item, name), fmt)) == (where, place):
                raise StorageError(
                    f"--out {out} would write the output of {item} over {item} itself; "
                    "choose another --out folder (or --format) so the photo is kept")
            continue
        if _visible_below(target, place):
            what = "the input folder" if target == place else "inside the input folder"
            raise StorageError(
                f"--out {out} is {what} {item}: its outputs could overwrite photos there, and the next "
                f"run would read them back as photos; choose an --out folder outside {item}")
        if mirrored and len(inputs) > 1 and _visible_below(storage.location(storage.join(out, name))[1], place):
            raise StorageError(
                f"--out {out} would mirror the input folder {item} onto itself ({storage.join(out, name)}): "
                f"its photos would be overwritten; choose an --out folder that does not hold {item}")


def _visible_below(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or under it, with no hidden (``.``-named) folder between them."""
    if path == folder:
        return True
    if not path.startswith(folder.rstrip("/") + "/"):
        return False
    return not any(part.startswith(".") for part in path[len(folder.rstrip("/")) + 1 :].split("/"))


def read_photo(uri: str, max_pixels: int | None = None) -> Image.Image:
    """Read and decode one photo (upright, size-checked).

    Raises:
        ClearbgError: it cannot be read or is not a usable image (StorageError/ImageError).

    Example:
        >>> read_photo("photos/a.jpg").size  # doctest: +SKIP
        (550, 832)
    """
    return imageio.open_image(storage.read_bytes(uri), max_pixels=max_pixels, name=uri)


def output_size(image: Image.Image, options: OutputOptions) -> tuple[int, int]:
    """The size ``compose`` will give the output of ``image``: the canvas's, else the photo's."""
    if options.canvas is not None and not options.mask_only:
        return options.canvas.width, options.canvas.height
    return image.size


def encode_output(image: Image.Image, prob, options: OutputOptions, fmt: str, quality: int = 95) -> bytes:
    """The bytes of one output file: the photo composed with its probability map, encoded.

    Example:
        >>> data = encode_output(photo, prob, OutputOptions(), "png")  # doctest: +SKIP
    """
    return imageio.encode_image(compose(image, prob, options), fmt, quality=quality)


def remove_files(
    inputs: Iterable[str],
    out_dir: str,
    predictor: Predictor,
    *,
    options: OutputOptions = OutputOptions(),
    fmt: str = "png",
    quality: int = 95,
    max_pixels: int | None = None,
    skip_existing: bool = False,
    progress: bool | None = None,
    workers: int = 2,
    gate: QualityGate | None = None,
) -> RemoveReport:
    """Write one output per photo found under ``inputs`` into ``out_dir``.

    Args:
        inputs: files, folders (walked recursively) or s3:// keys/prefixes.
        out_dir: local folder or s3:// prefix; outputs are ``<stem>.<fmt>``.
        predictor: the loaded model.
        options: mask, background colour, canvas.
        skip_existing: leave photos whose output already exists (resume an interrupted run).
        progress: show a progress bar (default: when stderr is a terminal).
        gate: score each mask (``clearbg.quality.gate``) and send those under its threshold to
            review; None: no score.

    Returns:
        A ``RemoveReport``. Input-level problems (a missing input, a folder that cannot be
        listed, a broken link) are failures too; the rest is still processed.

    Raises:
        StorageError: ``out_dir`` would overwrite an input or be read back as one (see
            ``check_output_location``); nothing was written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    inputs = list(inputs)
    check_output_location(inputs, out_dir, fmt)
    report = RemoveReport()
    started = time.perf_counter()
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(desc="removing", unit="img", disable=not show, dynamic_ncols=True)
    stop_counting = count_photos(inputs, bar) if show else None
    seen: dict[str, str] = {}

    def unlisted(uri: str, err: StorageError) -> None:
        report.failed.append(Failure(uri, str(err)))

    def todo() -> Iterator[tuple[storage.ImageRef, str]]:
        for ref in storage.iter_images(inputs, on_error=unlisted):
            target = output_uri(out_dir, ref, fmt)
            if target in seen:
                report.failed.append(Failure(ref.uri, f"output name {target} is already used by {seen[target]}"))
                bar.update()
                continue
            seen[target] = ref.uri
            if skip_existing and _finished(target, fmt):
                report.skipped.append(target)
                bar.update()
                continue
            yield ref, target

    for records in remove_stream(todo(), predictor, options=options, fmt=fmt, quality=quality, workers=workers,
                                 max_pixels=max_pixels, gate=gate):
        for record in records:
            if record["status"] == "ok":
                report.written.append(record["output"])
                if record["review"]:
                    report.reviewed.append(record["uri"])
            else:
                report.failed.append(Failure(record["uri"], record["error"]))
        bar.update(len(records))
    bar.total = bar.n  # the listing is exhausted, so this is exact even if the counter lags behind
    if stop_counting is not None:
        stop_counting.set()
    bar.close()
    report.seconds = time.perf_counter() - started
    return report


def count_photos(inputs: Sequence[str], bar: tqdm) -> threading.Event:
    """Count the photos under ``inputs`` in a background thread, raising ``bar.total`` as it goes,
    so the progress bar shows a total and an ETA.

    The run consumes its listing lazily, only a few photos ahead of the model, so it cannot
    know the total itself. Listing is far cheaper than the work per photo (S3: one LIST request
    per 1,000 keys against a GET, a decode, a model call and a PUT per photo), so this second,
    count-only pass finishes long before the run and keeps memory flat. An input that cannot be
    listed is left out: the run's own listing reports it.

    Returns:
        An event; set it to stop counting (the run ended first).

    Example:
        >>> stop = count_photos(["photos/"], tqdm(unit="img"))  # doctest: +SKIP
    """
    stop = threading.Event()

    def count() -> None:
        found = 0
        for item in inputs:
            try:
                for _ in storage.iter_images([item]):
                    if stop.is_set():
                        return
                    found += 1
                    bar.total = max(found, bar.n)  # growing until the listing ends
            except ClearbgError:
                continue
        bar.total = max(found, bar.n)
        bar.refresh()

    threading.Thread(target=count, name="clearbg-count", daemon=True).start()
    return stop


def remove_stream(
    items: Iterable[tuple[storage.ImageRef, str]],
    predictor: Predictor,
    *,
    options: OutputOptions = OutputOptions(),
    fmt: str = "png",
    quality: int = 95,
    workers: int = 2,
    max_pixels: int | None = None,
    gate: QualityGate | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """The per-photo pipeline of ``remove_files`` and ``clearbg batch`` (local and Spark).

    ``workers`` threads decode up to ``2 * batch_size`` photos ahead of the model and compose,
    encode and write behind it, so writing one batch overlaps predicting the next.

    Args:
        items: (photo, output URI) pairs, streamed.
        predictor, options, fmt, quality, max_pixels, gate: as for ``remove_files``.

    Yields:
        Lists of records (``photo_record``), one per photo once its output is in place (and,
        when under the gate's threshold, once it is in the review queue: a crash before that
        leaves it unjournaled, so a rerun does it again); a photo that cannot be read, decoded,
        stored in ``fmt`` (too large), written or sent to review gets a ``failed`` record with
        the reason. A photo that failed never reaches the gate.

    Example:
        >>> for records in remove_stream([(ref, "cut/a.png")], predictor):  # doctest: +SKIP
        ...     print([r["status"] for r in records])
    """

    def decode(ref: storage.ImageRef) -> tuple[Image.Image, float]:
        t0 = time.perf_counter()
        image = read_photo(ref.uri, max_pixels)
        # A result the format cannot store fails here, before the model spends time on it.
        imageio.check_encodable(output_size(image, options), fmt, ref.uri)
        return image, time.perf_counter() - t0

    def write(ref: storage.ImageRef, target: str, image: Image.Image, prob: np.ndarray,
              prediction: Prediction | None, spent: float) -> dict[str, Any]:
        t0 = time.perf_counter()
        storage.write_bytes(target, encode_output(image, prob, options, fmt, quality))
        score, review = (None, False)
        if gate is not None and prediction is not None:
            score, review = gate.judge(prediction, source=ref.uri, image=image, output=target)
        return photo_record(ref, "ok", spent + time.perf_counter() - t0, confidence=score, output=target,
                            review=review)

    def collect(ref: storage.ImageRef, future: Future) -> dict[str, Any]:
        try:
            return future.result()
        except ClearbgError as err:
            return photo_record(ref, "failed", 0.0, error=str(err))

    lookahead = predictor.batch_size * 2
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clearbg-io") as pool:
        window: deque[tuple[storage.ImageRef, str, Future]] = deque()
        writes: deque[tuple[storage.ImageRef, Future]] = deque()
        pending = iter(items)

        def refill() -> None:
            for ref, target in pending:
                window.append((ref, target, pool.submit(decode, ref)))
                if len(window) >= lookahead:
                    return

        refill()
        while window:
            batch, records = [], []
            while window and len(batch) < predictor.batch_size:
                ref, target, future = window.popleft()
                try:
                    image, spent = future.result()
                    batch.append((ref, target, image, spent))
                except ClearbgError as err:
                    records.append(photo_record(ref, "failed", 0.0, error=str(err)))
            refill()
            if batch:
                t0 = time.perf_counter()
                predicted = predict(predictor, [image for _, _, image, _ in batch], gate)
                share = (time.perf_counter() - t0) / len(batch)
                for (ref, target, image, spent), (prob, prediction) in zip(batch, predicted):
                    writes.append((ref, pool.submit(write, ref, target, image, prob, prediction, spent + share)))
            while writes and (writes[0][1].done() or len(writes) > lookahead):
                records.append(collect(*writes.popleft()))
            if records:
                yield records
        if writes:
            yield [collect(*entry) for entry in writes]


def predict(predictor: Predictor, images: list[Image.Image],
            gate: QualityGate | None) -> list[tuple[np.ndarray, Prediction | None]]:
    """Each photo's probability map, with the maps the gate scores when there is a gate."""
    if gate is None:
        return [(prob, None) for prob in predictor.predict(images)]
    return [(p.prob, p) for p in predictor.predict_detailed(images, flip=gate.scorer.flip)]


def photo_record(ref: storage.ImageRef, status: str, seconds: float, *, confidence: float | None = None,
                 error: str = "", output: str = "", review: bool = False) -> dict[str, Any]:
    """One photo's result as a plain dict (the journal's JSON line): see :class:`PhotoResult`."""
    if status == "ok":
        return PhotoResult.ok(ref, seconds, confidence=confidence, output=output, review=review).to_dict()
    return PhotoResult.failed(ref, error).to_dict()


def _finished(target: str, fmt: str) -> bool:
    """An earlier run's output is there whole: it exists and ``imageio.is_complete`` says so.

    A zero-byte or cut-short file (a full disk, a copy interrupted outside clearbg) is done again.
    """
    if not storage.exists(target):
        return False
    try:
        return imageio.is_complete(storage.read_bytes(target), fmt)
    except StorageError:
        return False  # unreadable: writing it again says why, if it still fails
