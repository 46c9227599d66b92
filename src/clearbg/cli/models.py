"""``clearbg models``"""

from __future__ import annotations

import click

from clearbg.models.specs import get_spec, list_models


@click.command("models")
def models_command():
    """List registered models and whether their weights are cached."""
    from clearbg.models.download import weights_paths

    rows = [("name", "input", "licence", "weights", "source")]
    for name in list_models():
        spec = get_spec(name)
        if spec.weights is None:
            weights = "none: train it"
        else:
            weights = "cached" if weights_paths(spec)[0].is_file() else "not downloaded"
        rows.append((name, f"{spec.input_size}px", spec.license, weights, spec.source))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4])
