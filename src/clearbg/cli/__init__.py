"""``clearbg`` command line: a thin layer over the library, one file per command."""

from __future__ import annotations

import click

from clearbg.cli.download import download_command
from clearbg.cli.models import models_command
from clearbg.cli.remove import remove_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clearbg")
def cli() -> None:
    """clearbg: background removal for product photos, from data to serving."""


cli.add_command(remove_command)
cli.add_command(download_command)
cli.add_command(models_command)


def main() -> None:
    cli()
