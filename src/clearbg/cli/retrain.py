"""``clearbg retrain --name N --data DATASET --feedback DIR [--queue review/queue.db]``"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError, printable


@click.command("retrain")
@click.option("--name", required=True, help="Registered model: its champion is fine-tuned into a challenger.")
@click.option("--data", required=True,
              help="The prepared dataset the champion was trained on: its test split is the frozen test set.")
@click.option("--feedback", required=True, help="Feedback folder or s3:// prefix (clearbg review --feedback).")
@click.option("--queue", "queue_url", default=None, help="Bring the feedback up to date from this review queue first.")
@click.option("--queue-images", default=None, help="Where the queue's images are, if not where it says.")
@click.option("--out", default="runs/retrain", show_default=True, help="Local folder for the rounds.")
@click.option("--epochs", type=int, default=1, show_default=True, help="Fine-tuning epochs over old + new pairs.")
@click.option("--max-steps", type=int, default=None, help="Stop fine-tuning after this many steps.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Any other clearbg train setting.")
@click.option("--margin", type=float, default=0.005, show_default=True, help="The promotion gate's margin (mean IoU).")
@click.option("--tolerance", type=float, default=0.01, show_default=True, help="The gate's largest drop for any group.")
@click.option("--tracking-uri", default=None, help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db).")
@click.option("--device", default=None, help="cpu, cuda ... for the evaluation (training: --set device=...).")
@click.option("--no-onnx", is_flag=True, help="Do not log the challenger's ONNX export.")
def retrain_command(name, data, feedback, queue_url, queue_images, out, epochs, max_steps, overrides, margin, tolerance,
                    tracking_uri, device, no_onnx):
    """Fine-tune a challenger on the reviewers' corrections and let the registry gate decide.

    Gathers the pairs reviewers accepted or corrected since the champion was trained, trains on
    them together with the champion's dataset (held-out photos left out), scores champion and
    challenger on that dataset's test split and promotes only if the challenger wins. Running
    it again after an interruption continues the round. Exit code 0 for a decision either way.

    \b
    Example:
      clearbg retrain --name shop --data data/shop --feedback data/feedback --queue review/queue.db --epochs 2
    """
    from clearbg.evaluate.settings import EvalSettings
    from clearbg.retrain import RetrainSettings, retrain

    try:
        result = retrain(RetrainSettings(
            name=name, data=data, feedback=feedback, queue=queue_url, queue_images=queue_images, out=out, epochs=epochs,
            max_steps=max_steps, overrides=tuple(overrides), margin=margin, tolerance=tolerance,
            tracking_uri=tracking_uri, evaluation=EvalSettings(device=device), onnx=not no_onnx))
    except ClearbgError as err:
        raise click.ClickException(printable(str(err))) from err
    if result.round is not None:
        click.echo(f"round {result.round}")
    click.echo(result.message)
