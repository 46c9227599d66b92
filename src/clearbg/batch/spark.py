"""``clearbg batch --engine spark``: the same per-item work, spread over a Spark cluster.

The driver streams the listing in chunks, drops what the journal says is done, and sends each
chunk as a DataFrame of (uri, relpath) through ``mapInPandas``. Every partition loads the model
once per Python worker and runs ``files.remove_stream`` (the local engine's pipeline) on its
rows: executors read the photos and write the outputs straight to storage (S3 in practice), and
only the small result records come back. The driver journals each chunk's records when the
chunk is done, so resuming and ``results.parquet`` work exactly as with the local engine. A driver killed mid-chunk redoes that chunk's photos
(their outputs are rewritten whole; the results still list each photo once).
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import pandas as pd

from clearbg import storage
from clearbg.batch.local import BatchSummary, open_run, output_for
from clearbg.removal.pipeline import remove_stream
from clearbg.removal.record import RESULT_COLUMNS, SPARK_SCHEMA
from clearbg.inference.compose import OutputOptions
from clearbg.review.gate import ReviewSettings, build_gate
from clearbg.spark import local_spark

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_predictors: dict[tuple, Any] = {}  # one model (and its gate) per Spark Python worker, reused across partitions


def run_batch_spark(
    inputs: Sequence[str],
    out: str,
    model: str,
    *,
    options: OutputOptions = OutputOptions(),
    fmt: str = "png",
    quality: int = 95,
    batch_size: int | None = None,
    precision: str = "auto",
    workers: int = 2,
    partitions: int = 2,
    retry_failed: bool = False,
    max_pixels: int | None = None,
    chunk: int = 10_000,
    spark: SparkSession | None = None,
    worker_env: Mapping[str, str] | None = None,
    review: ReviewSettings | None = None,
) -> BatchSummary:
    """Like ``run_batch``, with the photos processed by ``mapInPandas`` on Spark.

    Args:
        model: registry name or checkpoint path every executor can read.
        precision: as ``Predictor``'s, in every executor.
        partitions: partitions per chunk (at least the number of executor cores).
        chunk: photos listed and submitted per Spark job; bounds the driver's memory.
        spark: an active session (left running); None starts a local[2] one bound to 127.0.0.1
            and stops it at the end.
        worker_env: environment variables set in each Python worker before it touches storage.
            Default: the driver's S3 endpoint (``storage.ENDPOINT_VARIABLES``), so executors
            write where the driver lists. Credentials are not shipped unless given here:
            executors should have their own (instance role, ``spark.executorEnv.*``).
        review: as in ``run_batch``; each worker builds its own gate and opens the queue itself,
            so the queue must be reachable from the executors (a shared database and an
            ``s3://`` image prefix on a cluster).
        Other arguments as in ``run_batch``.

    Returns:
        A ``BatchSummary``.

    Example:
        >>> run_batch_spark(["s3://shop/raw/"], "s3://shop/cut/", "u2netp", partitions=64)  # doctest: +SKIP
    """
    started = time.perf_counter()
    if review is not None and review.active:
        # Fail before Spark starts: no calibration, or a queue the driver cannot open.
        build_gate(_driver_predictor(model, precision), review, job=f"batch {out}")
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    reviewed = 0
    unlisted: list[dict[str, Any]] = []
    journal, pending = open_run(inputs, out, fmt, retry_failed=retry_failed, counts=counts, unlisted=unlisted)
    own = spark is None
    spark = spark or local_spark("clearbg-batch")
    if worker_env is None:
        worker_env = {name: os.environ[name] for name in storage.ENDPOINT_VARIABLES if os.environ.get(name)}
    work = functools.partial(
        _partition, out=out, model=model, batch_size=batch_size, precision=precision, env=dict(worker_env), review=review, options=options,
        fmt=fmt, quality=quality, workers=workers, max_pixels=max_pixels,
    )

    try:
        while rows := list(itertools.islice(pending, chunk)):
            frame = pd.DataFrame({"uri": [r.uri for r in rows], "relpath": [r.relpath for r in rows]})
            jobs = spark.createDataFrame(frame).repartition(partitions).mapInPandas(work, SPARK_SCHEMA)
            # collect() runs all partitions at once (toLocalIterator would run them one by
            # one); a chunk's records are small, tens of bytes per photo.
            records = [_clean(row.asDict()) for row in jobs.collect()]
            journal.add(records)
            for record in records:
                counts[record["status"]] += 1
                reviewed += bool(record["review"])
    finally:
        journal.close()
        if own:
            spark.stop()
    results, failures = journal.write_results(unlisted)
    return BatchSummary(counts["ok"], counts["failed"], counts["skipped"], time.perf_counter() - started, results,
                        failures, reviewed)


def _partition(frames: Iterator[pd.DataFrame], *, out: str, model: str, batch_size: int | None, precision: str,
               fmt: str, env: dict[str, str], review: ReviewSettings | None, **kwargs: Any) -> Iterator[pd.DataFrame]:
    from clearbg.inference.predictor import Predictor

    # A Python worker inherits the environment its JVM started with, which may predate the
    # driver's settings (and on a cluster is another machine's).
    os.environ.update(env)
    key = (model, batch_size, precision, review, out)
    if key not in _predictors:
        predictor = Predictor(model, batch_size=batch_size, precision=precision)
        _predictors[key] = predictor, build_gate(predictor, review, job=f"batch {out}")
    predictor, gate = _predictors[key]
    refs = (storage.ImageRef(uri, relpath) for frame in frames for uri, relpath in zip(frame.uri, frame.relpath))
    items = ((ref, output_for(out, ref, fmt)) for ref in refs)
    for records in remove_stream(items, predictor, fmt=fmt, gate=gate, **kwargs):
        yield pd.DataFrame(records, columns=list(RESULT_COLUMNS))


def _driver_predictor(model: str, precision: str) -> Any:
    from clearbg.inference.predictor import Predictor

    return Predictor(model, batch_size=1, precision=precision)


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    if record["confidence"] is not None and pd.isna(record["confidence"]):
        record["confidence"] = None
    return record

