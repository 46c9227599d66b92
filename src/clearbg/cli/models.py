"""``clearbg models [NAME]``"""

from __future__ import annotations

import click

from clearbg.models.specs import ShippedFile, aliases_of, get_spec, list_models

# Model-card fields in the order a reader wants them (``clearbg/models/shipped/<name>.json``).
CARD_FIELDS = (
    ("sha256", "sha256"), ("license", "licence"), ("base", "started from"), ("data", "trained on"),
    ("command", "training command"), ("hardware", "hardware"), ("time", "training time"),
    ("selected", "selected"), ("test", "test (fp32)"),
)


@click.command("models")
@click.argument("name", required=False)
def models_command(name):
    """List registered models and whether their weights are cached; cards of the shipped ones.

    With NAME (``fashion``, ``u2netp.cars``...), only that model, with its card.
    """
    from clearbg.models.download import weights_paths

    names = [get_spec(name).name] if name else list_models()
    rows = [("name", "input", "licence", "weights", "source")]
    for spec_name in names:
        spec = get_spec(spec_name)
        if spec.weights is None:
            weights = "none: train it"
        elif isinstance(spec.weights, ShippedFile):
            weights = "shipped"
        else:
            weights = "cached" if weights_paths(spec)[0].is_file() else "not downloaded"
        rows.append((spec_name, f"{spec.input_size}px", spec.license, weights, spec.source))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4])
    for spec_name in names:
        spec = get_spec(spec_name)
        if isinstance(spec.weights, ShippedFile):
            _echo_card(spec_name, spec.weights)


def _echo_card(name: str, weights: ShippedFile) -> None:
    card = {"sha256": weights.sha256, **weights.card()}
    aliases = [a for a in aliases_of(name) if a != name.split(".")[0]]
    click.echo(f"\n{name}" + (f" (also: {', '.join(aliases)})" if aliases else "") + f": {weights}")
    width = max(len(label) for _, label in CARD_FIELDS)
    for key, label in CARD_FIELDS:
        if key in card:
            value = card[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            click.echo(f"  {label.ljust(width)}  {value}")
