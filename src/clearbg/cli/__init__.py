"""``clearbg`` command line: a thin layer over the library, one file per command.

Commands are imported when called, so ``clearbg prepare`` does not pay for PyTorch.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:function" of each command
COMMANDS = {
    "remove": "clearbg.cli.remove:remove_command",
    "batch": "clearbg.cli.batch:batch_command",
    "download": "clearbg.cli.download:download_command",
    "models": "clearbg.cli.models:models_command",
    "prepare": "clearbg.cli.prepare:prepare_command",
    "cluster": "clearbg.cli.cluster:cluster_command",
    "augment-preview": "clearbg.cli.augment_preview:augment_preview_command",
    "tune": "clearbg.cli.tune:tune_command",
    "train": "clearbg.cli.train:train_command",
    "evaluate": "clearbg.cli.evaluate:evaluate_command",
    "register": "clearbg.cli.register:register_command",
    "promote": "clearbg.cli.promote:promote_command",
    "export": "clearbg.cli.export:export_command",
    "serve": "clearbg.cli.serve:serve_command",
    "web": "clearbg.cli.web:web_command",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clearbg")
def cli() -> None:
    """clearbg: background removal for product photos, from data to serving."""


def main() -> None:
    cli()
