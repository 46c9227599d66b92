"""Remove backgrounds of every photo under some inputs (files, folders, s3:// prefixes).

Reading and decoding run in a small thread pool ahead of the model, and encoding and writing
behind it, so the two CPU cores stay on the network most of the time. A bad photo is recorded
and skipped; the good ones are still written. Each output is written atomically.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from PIL import Image
from tqdm import tqdm

from clearbg import imageio, storage
from clearbg.errors import ClearbgError
from clearbg.inference.compose import OutputOptions, compose
from clearbg.inference.predictor import Predictor

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
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def output_uri(out_dir: str, ref: storage.ImageRef, fmt: str) -> str:
    """``DIR/<stem>.<format>``."""
    return storage.join(out_dir, f"{ref.stem}.{fmt}")


def read_photo(uri: str, max_pixels: int | None = None) -> Image.Image:
    """Read and decode one photo (upright, size-checked).

    Raises:
        ClearbgError: it cannot be read or is not a usable image (StorageError/ImageError).

    Example:
        >>> read_photo("photos/a.jpg").size  # doctest: +SKIP
        (550, 832)
    """
    return imageio.open_image(storage.read_bytes(uri), max_pixels=max_pixels, name=uri)


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
) -> RemoveReport:
    """Write one output per photo found under ``inputs`` into ``out_dir``.

    Args:
        inputs: files, folders (walked recursively) or s3:// keys/prefixes.
        out_dir: local folder or s3:// prefix; outputs are ``<stem>.<fmt>``.
        predictor: the loaded model.
        options: mask, background colour, canvas.
        skip_existing: leave photos whose output already exists (resume an interrupted run).
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        A ``RemoveReport``. Input-level problems (a missing input folder) are failures too.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    report = RemoveReport()
    started = time.perf_counter()
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(desc="removing", unit="img", disable=not show, dynamic_ncols=True)
    seen: dict[str, str] = {}

    def decode(ref: storage.ImageRef) -> Image.Image:
        return read_photo(ref.uri, max_pixels)

    def write(image: Image.Image, prob, target: str) -> str:
        storage.write_bytes(target, encode_output(image, prob, options, fmt, quality))
        return target

    def todo() -> Iterator[tuple[storage.ImageRef, str]]:
        for ref in _walk(inputs, report):
            target = output_uri(out_dir, ref, fmt)
            if target in seen:
                report.failed.append(Failure(ref.uri, f"output name {target} is already used by {seen[target]}"))
                continue
            seen[target] = ref.uri
            if skip_existing and storage.exists(target):
                report.skipped.append(target)
                bar.update()
                continue
            yield ref, target

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clearbg-io") as pool:
        window: deque[tuple[storage.ImageRef, str, Future]] = deque()
        writes: deque[tuple[storage.ImageRef, Future]] = deque()
        pending = iter(todo())
        lookahead = predictor.batch_size * 2

        def refill() -> None:
            for ref, target in pending:
                window.append((ref, target, pool.submit(decode, ref)))
                if len(window) >= lookahead:
                    return

        refill()
        while window:
            batch = []
            while window and len(batch) < predictor.batch_size:
                ref, target, future = window.popleft()
                try:
                    batch.append((ref, target, future.result()))
                except ClearbgError as err:
                    report.failed.append(Failure(ref.uri, str(err)))
                    bar.update()
            refill()
            if batch:
                probs = predictor.predict([image for _, _, image in batch])
                for (ref, target, image), prob in zip(batch, probs):
                    writes.append((ref, pool.submit(write, image, prob, target)))
            while writes and (writes[0][1].done() or len(writes) > lookahead):
                _collect(writes.popleft(), report, bar)
        while writes:
            _collect(writes.popleft(), report, bar)
    bar.close()
    report.seconds = time.perf_counter() - started
    return report


def _walk(inputs: Iterable[str], report: RemoveReport) -> Iterator[storage.ImageRef]:
    for item in inputs:
        try:
            yield from storage.iter_images([item])
        except ClearbgError as err:
            report.failed.append(Failure(item, str(err)))


def _collect(entry: tuple[storage.ImageRef, Future], report: RemoveReport, bar: tqdm) -> None:
    ref, future = entry
    try:
        report.written.append(future.result())
    except ClearbgError as err:
        report.failed.append(Failure(ref.uri, str(err)))
    bar.update()
