"""``clearbg export --model NAME_OR_CHECKPOINT --out model.onnx [--dynamic-batch] [--fp16 | --int8]``"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError
from clearbg.models.specs import DEFAULT_MODEL


@click.command("export")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Registry name, .pth/.pt checkpoint, official .onnx or models:/NAME@ALIAS (MLflow registry).")
@click.option("--out", required=True, help="The .onnx file to write.")
@click.option("--dynamic-batch", is_flag=True, help="Free batch dimension (default: batch of 1).")
@click.option("--fp16", is_flag=True, help="Float16 weights and compute, float32 input/output (for GPUs/WebGPU).")
@click.option("--int8", is_flag=True, help="Static int8 quantisation (QDQ, per-channel), calibrated on --calibration photos.")
@click.option("--calibration", multiple=True, help="Photos or folders (local or s3://) to calibrate --int8 on; repeatable.")
@click.option("--calibration-count", default=16, show_default=True, help="Use the first N readable calibration photos (unreadable ones are skipped and listed).")
def export_command(model, out, dynamic_batch, fp16, int8, calibration, calibration_count):
    """Export a model to ONNX for ONNX Runtime, browsers and other runtimes.

    The file carries its input size and normalisation in its metadata; `clearbg remove
    --model model.onnx` runs it with ONNX Runtime.

    \b
    Examples:
      clearbg export --model u2netp --out u2netp.onnx --dynamic-batch
      clearbg export --model runs/best.pt --out shop-int8.onnx --int8 --calibration photos/
    """
    from clearbg.inference.onnx_export import export_file, read_calibration, read_metadata

    if fp16 and int8:
        raise click.UsageError("choose one of --fp16 and --int8")
    if int8 and not calibration:
        raise click.UsageError("--int8 needs --calibration PHOTOS (a handful of representative photos)")
    try:
        photos, skipped = read_calibration(calibration, calibration_count) if int8 else ([], [])
        for reason in skipped:
            click.echo(f"skipped calibration photo: {reason}", err=True)
        precision = "fp16" if fp16 else "int8" if int8 else "fp32"
        path = export_file(model, out, dynamic_batch=dynamic_batch, precision=precision, calibration=photos)
    except ClearbgError as err:
        raise click.ClickException(str(err)) from err
    size_mb = path.stat().st_size / 1e6
    calibrated = f", calibrated on {len(photos)} photos" if int8 else ""
    click.echo(f"{path} ({precision}{calibrated}, {size_mb:.1f} MB)")
    kept = read_metadata(path).int16_weights
    if kept:
        click.echo(f"  kept at 16-bit weights (int8 would break them): {', '.join(kept)}")
