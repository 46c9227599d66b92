"""``clearbg tune --data DATASET --trials N``"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError


@click.command("tune")
@click.option("--data", required=True, help="Prepared dataset folder or s3:// prefix (clearbg prepare).")
@click.option("--trials", "n_trials", type=int, required=True, help="Trials to run now (a rerun adds to the study).")
@click.option("--config", "config_path", default=None, help="Base training config (YAML); trials vary it.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set epochs=3 --set size=160. Repeatable.")
@click.option("--space", "space_path", default=None,
              help="Search space YAML: key: {low, high[, log]} or key: {choices: [...]}. Default: lr, batch_size, "
                   "loss.iou, loss.boundary, augment.strength.")
@click.option("--study", "study_name", default=None, help="Study name (default tune-<model>-<dataset>); reuse it to continue.")
@click.option("--storage", default=None, help="Optuna storage URL (default: optuna.db beside the MLflow store).")
@click.option("--timeout", type=float, default=None, help="Stop starting new trials after this many seconds.")
def tune_command(data, n_trials, config_path, overrides, space_path, study_name, storage, timeout):
    """Search learning rate, batch size, loss weights and augmentation strength with Optuna.

    Each trial is one training run (an MLflow child run under the study's parent run); trials
    whose validation IoU falls below the median of earlier trials are pruned. The best config
    is written as YAML for `clearbg train --config`.

    \b
    Examples:
      clearbg tune --data data/shop-320 --trials 20 --set epochs=3
      clearbg tune --data data/shop-320 --trials 10 --config base.yaml --space space.yaml
    """
    import optuna
    import yaml

    from clearbg.train.config import load_config
    from clearbg.train.tune import best_config_path, default_study_name, tune

    try:
        config = load_config(config_path, [f"data={data}", *overrides])
        space = None
        if space_path is not None:
            try:
                with open(space_path) as f:
                    space = yaml.safe_load(f)
            except (OSError, yaml.YAMLError) as err:
                raise click.ClickException(f"cannot read search space {space_path}: {err}") from err
            if not isinstance(space, dict):
                raise click.ClickException(f"{space_path} must hold a mapping of config keys to ranges")
        study = tune(config, n_trials, storage=storage, study_name=study_name, timeout=timeout, search_space=space)
    except ClearbgError as err:
        raise click.ClickException(str(err)) from err

    trials = study.trials
    names = sorted({k for t in trials for k in t.params})
    header = ["trial", "state", "val/iou", "seconds", *names]
    rows = [header]
    for t in trials:
        seconds = t.duration.total_seconds() if t.duration is not None else None
        rows.append([
            str(t.number), t.state.name, "-" if t.value is None else f"{t.value:.4f}",
            "-" if seconds is None else f"{seconds:.0f}",
            *(_fmt(t.params.get(k)) for k in names),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        click.echo("no trial completed (all pruned or failed): no best config", err=True)
        raise SystemExit(1)
    best = study.best_trial
    click.echo(f"\nbest: trial {best.number}, val/iou {best.value:.4f}")
    for key, value in best.params.items():
        click.echo(f"  {key} = {_fmt(value)}")
    click.echo(f"config: {best_config_path(config, study_name or default_study_name(config))}")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
