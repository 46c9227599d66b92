"""``clearbg calibrate --model M --data DATASET[:val]``"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError, printable
from clearbg.inference.predictor import PRECISIONS
from clearbg.models.specs import DEFAULT_MODEL


@click.command("calibrate")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Registry name, checkpoint/export file or models:/NAME@ALIAS.")
@click.option("--data", required=True, help="A prepared dataset with true masks, DATASET[:split] (default split val).")
@click.option("--precision", type=click.Choice([p for p in PRECISIONS if p != "int8"]), default="auto", show_default=True,
              help="On PyTorch, which gives the side outputs every score variant needs (auto: fp32 on CPU, fp16 on GPU).")
@click.option("--device", default=None, help="cpu, cuda ... (default: CUDA if available).")
def calibrate_command(model, data, precision, device):
    """Fit the model's confidence score on photos with true masks and store it beside the model.

    The score (a predicted IoU) is what --review-below / --review-share gate on. A registry name
    keeps it in clearbg's cache beside the weights, a file beside the file (FILE.confidence.json),
    a registered models:/ version in the registry with that version.

    \b
    Examples:
      clearbg calibrate --model u2netp --data data/studio
      clearbg calibrate --model runs/shop/checkpoints/best.pt --data data/shop:val
    """
    from clearbg.models.mlflow_uris import is_mlflow_uri
    from clearbg.quality.fit import calibrate
    from clearbg.quality.store import save_calibration

    try:
        calibration = calibrate(model, data, precision=precision, device=device)
        if is_mlflow_uri(model):
            from clearbg.registry.register import attach_calibration

            where = attach_calibration(model, calibration)
        else:
            where = save_calibration(calibration, model)
    except (ClearbgError, ValueError) as err:
        raise click.ClickException(printable(str(err))) from err
    metrics = calibration.metrics.get("flip+sides", {})
    click.echo(f"{calibration.model}: fitted on {calibration.photos} photos of {printable(calibration.data)} "
               f"(Spearman with IoU {metrics.get('spearman', float('nan')):.3f} on them) -> {printable(where)}", err=True)
