"""``clearbg augment-preview DATASET --out grid.png``"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError


def _parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) <= 0:
        raise click.BadParameter(f"expected 320 or 320x240, got {value!r}", param_hint="--size")
    return (parts[0], parts[-1])


@click.command("augment-preview")
@click.argument("dataset")
@click.option("--out", required=True, help="PNG to write (local path or s3://).")
@click.option("--n", "n", default=16, show_default=True, help="Pairs to sample, one row each.")
@click.option("--versions", default=4, show_default=True, help="Augmented versions per pair, after the original.")
@click.option("--seed", default=0, show_default=True, help="Picks the pairs and seeds the augmentation.")
@click.option("--size", default=None, help="Cell size, 320 or 320x240 (default: the dataset's first prepared size).")
@click.option("--strength", type=float, default=None, help="Augmentation strength (0 = none, 1 = training default).")
@click.option("--split", default=None, help="Only pairs of this split (default: all).")
@click.option("--config", "config_path", default=None, help="A training config (YAML): preview its augment settings.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any augmentation setting, as training's augment.KEY, e.g. --set p_caption=1 --set p_crop=0.")
def augment_preview_command(dataset, out, n, versions, seed, size, strength, split, config_path, overrides):
    """Write a PNG grid of augmented samples of DATASET so a person can check them.

    Each row is one pair: the original, then augmented versions, with the mask's outline in
    magenta; the outline must follow the product's edge in every cell.

    \b
    Example:
      clearbg augment-preview prepared/ --out grid.png --n 8 --strength 1.5
      clearbg augment-preview prepared/ --out grid.png --set p_caption=1 --set p_crop=0
      clearbg augment-preview data/cars-320 --out grid.png --config recipes/cars-u2netp.yaml
    """
    from clearbg.data.dataset import write_augment_preview
    from clearbg.train.config import ConfigError, load_config

    # Training's own config reader: the same type checks and the same "did you mean" for keys.
    settings = [f"augment.{item.removeprefix('augment.')}" for item in overrides]
    if strength is not None:
        settings.insert(0, f"augment.strength={strength}")
    try:
        augment = load_config(config_path, [f"data={dataset}", *settings]).augment
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--config/--set") from err
    try:
        ids = write_augment_preview(
            dataset, out, n=n, versions=versions, seed=seed, size=_parse_size(size), split=split, augment=augment
        )
    except (ClearbgError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"wrote {out}: {len(ids)} pairs x (original + {versions} augmented); rows: {', '.join(ids)}", err=True)
