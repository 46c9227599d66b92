"""``clearbg evaluate --model NAME|PATH|models:/NAME@ALIAS --data DATASET[:split] --out DIR``"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError
from clearbg.inference.predictor import PRECISIONS


@click.command("evaluate")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    help="Registry name (u2netp, u2net ...), checkpoint path (runs/x/best.pt) or models:/NAME@ALIAS. "
    "Give it twice to compare two models side by side (the first is the baseline).",
)
@click.option(
    "--data", required=True, help="Prepared dataset (`clearbg prepare`), optionally with :split (default :test)."
)
@click.option("--out", "out_dir", required=True, help="Folder for report.html, summary.json, per_image.csv.")
@click.option("--worst", default=12, show_default=True, help="Images in each worst-case grid.")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="fp32",
    show_default=True,
    help="fp32 gives reproducible numbers; bf16/fp16 measure what a faster deployment gets.",
)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available).")
@click.option("--threshold", default=0.5, show_default=True, help="A pixel is product above this probability.")
@click.option("--boundary-tolerance", default=3, show_default=True, help="Pixels an outline may be off (boundary F).")
@click.option("--limit", type=int, default=None, help="Score only the first N images of the split (a quick look).")
@click.option("--batch-size", type=int, default=None, help="Photos per batch (default: cores on CPU, 8 on GPU).")
@click.option("--tta", is_flag=True, help="Test-time flip: average each map with its mirror image's (2x the cost).")
@click.option("--title", default=None, help="Title of the report page.")
@click.option(
    "--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db)."
)
@click.option("--no-mlflow", is_flag=True, help="Do not log the report to MLflow.")
def evaluate_command(
    models,
    data,
    out_dir,
    worst,
    precision,
    device,
    threshold,
    boundary_tolerance,
    limit,
    batch_size,
    tta,
    title,
    tracking_uri,
    no_mlflow,
):
    """Score models on a dataset's held-out split at full photo resolution and write a report.

    Per image: IoU, Dice, precision, recall, MAE, boundary F and error regions (correction
    effort), against the original masks; then means, medians, the share of images at >= 95/97/99 %
    IoU, per cluster / product type, and the worst images. OUT gets one self-contained
    report.html plus the numbers as JSON/CSV; the report is also logged to MLflow (experiment
    clearbg-evaluate) unless --no-mlflow.

    \b
    Examples:
      clearbg evaluate --model u2netp --data data/fashion-320 --out eval/u2netp
      clearbg evaluate --model u2netp --model runs/shop/checkpoints/best.pt --data data/shop-320:val --out eval/cmp
      clearbg evaluate --model models:/shop@champion --data data/shop-320 --out eval/champion --no-mlflow
    """
    from clearbg.evaluate.report import summary_table, write_report
    from clearbg.evaluate.run import evaluate_model
    from clearbg.evaluate.settings import EvalSettings
    from clearbg.evaluate.tracking import log_evaluation

    if len(models) > 2:
        raise click.UsageError("give --model once, or twice to compare two models")
    settings = EvalSettings(device=device, precision=precision, threshold=threshold,
                            boundary_tolerance=boundary_tolerance, limit=limit, batch_size=batch_size,
                            tta=tta)
    try:
        evaluations = [evaluate_model(model, data, settings=settings) for model in models]
        report = write_report(evaluations, out_dir, worst_k=worst, title=title)
        run_id = None if no_mlflow else log_evaluation(out_dir, tracking_uri=tracking_uri)
    except ClearbgError as err:
        raise click.ClickException(str(err)) from err
    click.echo(summary_table(evaluations))
    for evaluation in evaluations:
        seconds = evaluation.settings.get("seconds")
        failed = f", {len(evaluation.failed)} could not be scored" if evaluation.failed else ""
        click.echo(f"{evaluation.model}: {len(evaluation.per_image)} images in {seconds} s{failed}", err=True)
    click.echo(f"report: {report}", err=True)
    if run_id is not None:
        click.echo(f"MLflow run {run_id} (experiment clearbg-evaluate)", err=True)
