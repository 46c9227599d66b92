"""``clearbg batch SRC... --out DST``"""

from __future__ import annotations

import sys

import click

from clearbg.cli.options import OutputFormat, edge_options, edge_settings, review_options, review_settings
from clearbg.errors import ClearbgError, printable
from clearbg.inference.predictor import PRECISIONS
from clearbg.models.specs import DEFAULT_MODEL, model_choices

SHOW_FAILURES = 20
"""Failed photos named on the terminal; results.parquet has them all."""


@click.command("batch")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, help="Output folder or s3:// prefix; mirrors the input tree.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help=f"Registry name ({', '.join(model_choices())}), .pth/.pt/.onnx checkpoint path or models:/NAME@ALIAS (MLflow registry).")
@click.option("--mask", "mask_only", is_flag=True, help="Write the 8-bit greyscale mask instead of a cutout.")
@click.option("--bg-color", default=None, help="Solid background instead of transparency, e.g. '#ffffff'.")
@click.option("--format", "fmt", type=OutputFormat(), default="png", show_default=True,
              help="Output format, any case (jpeg = jpg).")
@click.option("--batch-size", type=int, default=None, help="Photos per inference batch (default: cores on CPU, 8 on GPU).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto: int8 (ONNX Runtime, cached export) for u2netp on CPUs with VNNI/AMX-INT8, fp16 on GPU, else fp32.")
@click.option("--workers", type=int, default=2, show_default=True, help="Threads reading/decoding ahead and writing behind.")
@click.option("--retry-failed", is_flag=True, help="Attempt photos that failed in an earlier run again.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
              help="spark: mapInPandas on the active Spark cluster (local[2] when there is none).")
@click.option("--partitions", type=int, default=2, show_default=True, help="Spark partitions per chunk of photos.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available).")
@click.option("--max-pixels", type=int, default=None, help="Refuse larger photos (default 100 MP, or CLEARBG_MAX_PIXELS).")
@review_options
@edge_options
def batch_command(inputs, out_dir, model, mask_only, bg_color, fmt, batch_size, precision, workers, retry_failed, engine, partitions,
                  device, max_pixels,
                  review_below, review_share, queue_url, queue_images, **edges):
    """Remove backgrounds of every photo under SRC, resumably, with a results table.

    Finished photos are journaled in DST/.batch/, so rerunning the same command after a crash
    (even kill -9) skips them; DST/results.parquet lists every photo with its status, error,
    confidence, seconds, output and review flag. With --review-below or --review-share,
    photos under the threshold also go to the review queue (once, however often the batch is
    rerun). One SRC folder is mirrored into DST; several keep their
    names (DST/shoot1/..., DST/shoot2/...); a photo whose output name is taken (x.jpg and x.png)
    is recorded as failed, not overwritten. The first failures are named here, and the exit code
    is 1 while results.parquet holds any, a rerun that only skips included.

    \b
    Examples:
      clearbg batch photos/ --out cutouts/
      clearbg batch shoot1/ shoot2/ --out cutouts/
      clearbg batch s3://studio/raw/ --out s3://studio/cut/ --batch-size 16 --workers 8
      clearbg batch photos/ --out cutouts/ --retry-failed
      clearbg batch s3://studio/raw/ --out s3://studio/cut/ --engine spark --partitions 64
      clearbg batch photos/ --out cutouts/ --review-share 0.1 --queue postgresql://clearbg@db/review --queue-images s3://studio/review/
      clearbg batch photos/ --out web/ --bg-color white --format jpg --decontaminate --shadow contact
    """
    from clearbg.removal.api import make_options
    from clearbg.batch import run_batch
    from clearbg.batch.spark import run_batch_spark
    from clearbg.inference.predictor import Predictor

    if fmt == "jpg" and bg_color is None and not mask_only:
        bg_color = "#ffffff"  # JPEG has no alpha
    try:
        options = make_options(mask_only=mask_only, bg_color=bg_color, **edge_settings(edges))
        review = review_settings(review_below, review_share, queue_url, queue_images)
        common = dict(options=options, fmt=fmt, workers=max(1, workers), retry_failed=retry_failed, max_pixels=max_pixels,
                      review=review)
        if engine == "spark":
            from pyspark.sql import SparkSession

            summary = run_batch_spark(
                inputs, out_dir, model, batch_size=batch_size, precision=precision, partitions=partitions,
                spark=SparkSession.getActiveSession(), **common,
            )
        else:
            predictor = Predictor(model, device=device, precision=precision, batch_size=batch_size)
            click.echo(predictor.summary, err=True)
            summary = run_batch(inputs, out_dir, predictor, **common)
    except (ClearbgError, ValueError) as err:
        raise click.ClickException(printable(str(err))) from err
    click.echo(
        f"{summary.ok} ok, {summary.failed} failed, {summary.skipped} already done in {summary.seconds:.1f} s "
        f"({summary.rate:.1f} img/s) -> {printable(summary.results)}",
        err=True,
    )
    if review.active:
        click.echo(f"{summary.reviewed} under the confidence threshold sent to review -> {printable(review.queue)} "
                   "(`clearbg queue status`)", err=True)
    # Failures of earlier runs count too: a rerun that only skips must not look like success.
    for row in summary.failures[:SHOW_FAILURES]:
        reason = row["error"] if row["error"].startswith(row["uri"]) else f"{row['uri']}: {row['error']}"
        click.echo(f"FAILED {printable(reason)}", err=True)
    if summary.failures:
        more = len(summary.failures) - SHOW_FAILURES
        shown = f" ({more} more not shown)" if more > 0 else ""
        click.echo(f"{len(summary.failures)} still failed{shown}, all listed in {printable(summary.results)}; "
                   "fix them, then rerun with --retry-failed", err=True)
        sys.exit(1)
