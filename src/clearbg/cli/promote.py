"""``clearbg promote --name N --data DATASET[:split]`` (and ``--rollback``)"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError


@click.command("promote")
@click.option("--name", required=True, help="Registered model name.")
@click.option("--data", default=None, help="Held-out set both are scored on: DATASET[:split] (default split: test).")
@click.option("--margin", type=float, default=0.005, show_default=True,
              help="The challenger's mean IoU must beat the champion's by at least this.")
@click.option("--tolerance", type=float, default=0.01, show_default=True,
              help="No group's mean IoU may drop by more than this.")
@click.option("--fresh", is_flag=True, help="Evaluate both again even if the evaluation stored at registration fits.")
@click.option("--rollback", is_flag=True, help="Swap champion and previous-champion (undo the last promotion); no --data.")
@click.option("--tracking-uri", default=None, help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db).")
@click.option("--device", default=None, help="cpu, cuda ... (default: CUDA when available).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16", "auto"]), default="fp32", show_default=True,
              help="Precision of the evaluation (fp32: reproducible numbers).")
@click.option("--limit", type=int, default=None, help="Score only the first N images.")
def promote_command(name, data, margin, tolerance, fresh, rollback, tracking_uri, device, precision, limit):
    """Compare champion and challenger on the same images; move champion only if the challenger earns it.

    Promotes when the challenger's mean IoU is higher by at least --margin and no group's mean
    IoU drops by more than --tolerance (paired, image by image). Prints the table and the
    decision and records both in MLflow (experiment clearbg-promote). A refusal is a decision,
    not an error: the exit code is 0 either way.

    \b
    Examples:
      clearbg promote --name shop --data data/shop-320
      clearbg promote --name shop --data data/shop-320:test --margin 0.01 --tolerance 0.02
      clearbg promote --name shop --rollback
    """
    from clearbg import registry
    from clearbg.evaluate.settings import EvalSettings

    try:
        if rollback:
            champion, previous = registry.rollback(name, tracking_uri=tracking_uri)
            click.echo(f"{name}: champion -> v{champion}, {registry.PREVIOUS_CHAMPION} -> v{previous} (rolled back)")
            return
        if data is None:
            raise click.UsageError("--data DATASET[:split] is required (the held-out set both models are scored on)")
        result = registry.promote(name, data, margin=margin, tolerance=tolerance, tracking_uri=tracking_uri,
                                  fresh=fresh, settings=EvalSettings(device=device, precision=precision, limit=limit))
    except ClearbgError as err:
        raise click.ClickException(str(err)) from err
    click.echo(result.table())
