"""``clearbg remove INPUT... --out DIR``"""

from __future__ import annotations

import sys

import click

from clearbg.cli.options import OutputFormat, edge_options, edge_settings, review_options, review_settings
from clearbg.errors import ClearbgError, printable
from clearbg.inference.predictor import ENGINES, PRECISIONS
from clearbg.models.specs import DEFAULT_MODEL, model_choices


@click.command("remove")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, help="Output folder or s3:// prefix; writes <stem>.<format>.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help=f"Registry name ({', '.join(model_choices())}), .pth/.pt/.onnx checkpoint path or models:/NAME@ALIAS (MLflow registry).")
@click.option("--mask", "mask_only", is_flag=True, help="Write the 8-bit greyscale mask instead of a cutout.")
@click.option("--bg-color", default=None, help="Solid background instead of transparency, e.g. '#ffffff'.")
@click.option("--format", "fmt", type=OutputFormat(), default="png", show_default=True,
              help="Output format, any case (jpeg = jpg).")
@click.option("--quality", default=95, show_default=True, help="JPEG/WebP quality.")
@click.option("--canvas", default=None, help="Centre the product on a uniform canvas, e.g. 1000x1000.")
@click.option("--margin", default=0.05, show_default=True, help="Canvas margin as a fraction of its side.")
@click.option("--batch-size", type=int, default=None, help="Photos per batch (default: cores on CPU, 8 on GPU).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto: int8 (ONNX Runtime, cached export) for u2netp on CPUs with VNNI/AMX-INT8, fp16 on GPU, else fp32. "
                   "bf16: about 3x fp32 where native, for about 0.0015 IoU.")
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
              help="auto: onnxruntime for a `clearbg export` .onnx file or int8, else torch.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available).")
@click.option("--tta", is_flag=True, help="Test-time flip: average each map with its mirror image's (2x the network's cost).")
@click.option("--max-pixels", type=int, default=None, help="Refuse larger photos (default 100 MP, or CLEARBG_MAX_PIXELS).")
@click.option("--skip-existing", is_flag=True, help="Leave photos whose output already exists (resume).")
@review_options
@edge_options
def remove_command(inputs, out_dir, model, mask_only, bg_color, fmt, quality, canvas, margin, batch_size, precision, engine, device, tta, max_pixels, skip_existing,
                   review_below, review_share, queue_url, queue_images, **edges):
    """Remove the background of every photo in INPUT (files, folders, s3:// prefixes).

    \b
    Examples:
      clearbg remove photos/ --out cutouts/
      clearbg remove shoot.jpg --out web/ --bg-color '#ffffff' --format jpg
      clearbg remove s3://studio/raw/ --out s3://studio/masks/ --mask
      clearbg remove photos/ --out cutouts/ --review-share 0.1    # the doubtful 10 % to review/queue.db
      clearbg remove shoot/ --out shop/ --canvas 1000 --bg-color white --shadow contact -dc
      clearbg remove shoot/ --out shop/ --refine matting -ae 5
    """
    from clearbg.removal.api import make_options
    from clearbg.removal.pipeline import remove_files
    from clearbg.inference.compose import Canvas
    from clearbg.inference.predictor import Predictor
    from clearbg.review.gate import build_gate

    if fmt == "jpg" and bg_color is None and not mask_only:
        bg_color = "#ffffff"  # JPEG has no alpha: a white background is what shops expect
    try:
        options = make_options(
            mask_only=mask_only, bg_color=bg_color, canvas=Canvas.parse(canvas, margin) if canvas else None,
            **edge_settings(edges),
        )
        predictor = Predictor(model, device=device, precision=precision, batch_size=batch_size, engine=engine, tta=tta)
        click.echo(predictor.summary, err=True)
        review = review_settings(review_below, review_share, queue_url, queue_images)
        gate = build_gate(predictor, review, job=f"remove {out_dir}")
        report = remove_files(
            inputs, out_dir, predictor, options=options, fmt=fmt, quality=quality,
            max_pixels=max_pixels, skip_existing=skip_existing, gate=gate,
        )
    except (ClearbgError, ValueError) as err:
        raise click.ClickException(printable(str(err))) from err
    done = len(report.written)
    rate = done / report.seconds if report.seconds else 0.0
    click.echo(
        f"{done} written, {len(report.skipped)} already done, {len(report.failed)} failed "
        f"in {report.seconds:.1f} s ({rate:.1f} img/s) -> {printable(out_dir)}",
        err=True,
    )
    if gate is not None and gate.threshold is not None:
        click.echo(f"{len(report.reviewed)} under confidence {gate.threshold:.4f} sent to review -> "
                   f"{printable(review.queue)} (clearbg queue status)", err=True)
    if not report.written and not report.skipped and not report.failed:
        click.echo("no images found in the inputs", err=True)
        sys.exit(1)
    for failure in report.failed:
        reason = failure.reason if failure.reason.startswith(failure.uri) else f"{failure.uri}: {failure.reason}"
        click.echo(f"FAILED {printable(reason)}", err=True)
    if report.failed:
        sys.exit(1)
