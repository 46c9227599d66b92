"""``clearbg register --model PATH|NAME|runs:/... --name N --data DATASET[:split]``"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError


@click.command("register")
@click.option("--model", "model", required=True,
              help="Checkpoint (runs/x/checkpoints/best.pt, .pth, .onnx), registry name (u2netp) or MLflow URI (runs:/RUN_ID/model, models:/NAME@ALIAS).")
@click.option("--name", required=True, help="Registered model name, e.g. shop (created on first use).")
@click.option("--data", required=True, help="Held-out set to evaluate on: DATASET[:split] (default split: test).")
@click.option("--alias", default="challenger", show_default=True, help="Alias for the new version.")
@click.option("--tracking-uri", default=None, help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db).")
@click.option("--description", default=None, help="Description of the version in the registry.")
@click.option("--device", default=None, help="cpu, cuda ... (default: CUDA when available).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16", "auto"]), default="fp32", show_default=True,
              help="Precision of the evaluation (fp32: reproducible numbers).")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N images (a quick look).")
@click.option("--onnx/--no-onnx", default=True, show_default=True,
              help="Also log the fp32 ONNX export (MLflow onnx flavour); --engine onnxruntime then serves it.")
def register_command(model, name, data, alias, tracking_uri, description, device, precision, limit, onnx):
    """Evaluate a model on a held-out set and register it as a new version with the alias challenger.

    The version carries its evaluation (figures as tags and run metrics, report.html, per-image
    table), its ONNX export and its confidence calibration (fitted on the dataset's val split, when
    it has one: what --review-below / --review-share gate on); `clearbg promote --name NAME` then
    compares it with the champion.

    \b
    Examples:
      clearbg register --model runs/u2netp-shop/checkpoints/best.pt --name shop --data data/shop-320
      clearbg register --model u2netp --name shop --data data/shop-320:test
    """
    from clearbg.evaluate.settings import EvalSettings
    from clearbg.registry import register_model

    try:
        reg = register_model(model, name, data, alias=alias, tracking_uri=tracking_uri, description=description,
                             settings=EvalSettings(device=device, precision=precision, limit=limit), onnx=onnx)
    except ClearbgError as err:
        raise click.ClickException(str(err)) from err
    summary = reg.evaluation.summary()
    overall = summary["overall"]
    click.echo(f"registered {reg.model_uri} (alias {reg.alias}) from {reg.source} [{reg.spec}]"
               + (" with its ONNX export" if onnx else ""))
    click.echo(f"  {reg.evaluation.data}: {summary['n']} images, mean IoU {overall['iou_mean']:.4f}, "
               f"IoU >= 95 %: {overall['share_iou_95']:.1%}")
    for group, figures in summary["groups"].items():
        click.echo(f"  {group}: {figures['n']} images, mean IoU {figures['iou_mean']:.4f}")
    click.echo(f"  confidence calibration: {reg.calibration}" if reg.calibration else
               "  no confidence calibration (the dataset has no val split with enough photos); fit one with "
               f"clearbg calibrate --model {reg.model_uri} --data DATASET:val")
    click.echo(f"  MLflow run {reg.run_id} ({reg.tracking_uri}); next: clearbg promote --name {reg.name} --data {reg.evaluation.data}")
