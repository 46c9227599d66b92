"""``clearbg interpolate --model TUNED --alpha 0.3,0.5,0.7 --data DATASET:val --out FILE``"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError


def _alphas(ctx, param, value: str) -> list[float]:
    try:
        alphas = [float(a) for a in value.split(",") if a.strip()]
    except ValueError as err:
        raise click.BadParameter(f"expected numbers separated by commas, got {value!r}") from err
    if not alphas:
        raise click.BadParameter("give at least one alpha")
    return alphas


@click.command("interpolate")
@click.option("--model", "tuned", required=True, help="The fine-tuned model: runs/x/checkpoints/best.pt, models:/NAME@ALIAS ...")
@click.option("--base", default="official", show_default=True,
              help="The weights the fine-tune started from (official: the architecture's released weights).")
@click.option("--alpha", "alphas", default="0.3,0.5,0.7", show_default=True, callback=_alphas,
              help="Share(s) of the fine-tuned weights to try, separated by commas (1 = the fine-tune, 0 = the base).")
@click.option("--data", default=None, help="Dataset whose val split chooses the alpha (needed for more than one).")
@click.option("--out", required=True, help="Checkpoint file to write the chosen blend to.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16", "auto"]), default="fp32", show_default=True,
              help="Precision of the val evaluations.")
@click.option("--device", default=None, help="cpu, cuda ... (default: CUDA when available).")
def interpolate_command(tuned, base, alphas, data, out, precision, device):
    """Blend a fine-tune with the weights it started from, choosing the mix on the val split.

    (1 - alpha) * base + alpha * tuned, BatchNorm folded first (WiSE-FT): a fine-tune on a small
    set keeps most of its gain and gets back most of the pretrained weights' robustness (what
    they know of photos the set lacks). The file written registers like a training checkpoint.

    \b
    Examples:
      clearbg interpolate --model runs/cars/checkpoints/latest.pt --data data/cars-320 --out cars-blend.pt
      clearbg interpolate --model runs/cars/checkpoints/latest.pt --alpha 0.5 --out cars-blend.pt
    """
    from clearbg.evaluate.settings import EvalSettings
    from clearbg.train.interpolate import blend_and_select

    try:
        best, tried = blend_and_select(tuned, alphas, out, base=base, data=data,
                                       settings=EvalSettings(device=device, precision=precision))
    except ClearbgError as err:
        raise click.ClickException(str(err)) from err
    if tried:
        click.echo("alpha  val IoU")
        for blend in tried:
            mark = "  <- chosen" if blend is best else ""
            click.echo(f"{blend.alpha:<5g}  {blend.iou_mean:.4f}{mark}")
    click.echo(f"wrote {out} (alpha {best.alpha if best else alphas[0]:g})")
