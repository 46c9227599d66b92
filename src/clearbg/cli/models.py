"""``clearbg models``"""

from __future__ import annotations

import click

from clearbg.models.registry import get_spec, list_models


@click.command("models")
def models_command():
    """List registered models and whether their weights are cached."""
    from clearbg.models.download import weights_paths

    for name in list_models():
        spec = get_spec(name)
        cached = "cached" if weights_paths(spec)[0].is_file() else "not downloaded"
        click.echo(f"{name:20s} {spec.input_size}px  {spec.license:12s} {cached:15s} {spec.source}")
