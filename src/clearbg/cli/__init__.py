"""``clearbg`` command line: a thin layer over the library, one file per command.

Commands are imported when called, so ``clearbg prepare`` does not pay for PyTorch.
"""

from __future__ import annotations

import importlib
import sys

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


# Optional third-party module -> the extra that installs it (pyproject.toml).
EXTRAS = {
    "pandas": "data", "pyarrow": "data", "sklearn": "data", "scipy": "data", "yaml": "data",
    "mlflow": "train", "optuna": "train", "tensorboard": "train", "matplotlib": "eval",
    "fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "starlette": "serve",
    "pyspark": "spark", "s3fs": "s3",
}


def missing_extra(err: ImportError) -> str | None:
    """The pip command that installs what ``err`` says is missing, if it is one of our extras."""
    name = (err.name or "").split(".")[0]
    if not name and "s3fs" in str(err):  # fsspec: "Install s3fs to access S3"
        name = "s3fs"
    extra = EXTRAS.get(name)
    return None if extra is None else f"pip install 'clearbg[{extra}]'"


def main() -> None:
    try:
        cli()
    except ImportError as err:
        fix = missing_extra(err)
        if fix is None:
            raise
        command = next((a for a in sys.argv[1:] if a in COMMANDS), "this command")
        click.echo(f"Error: clearbg {command} needs {err.name or 's3fs'}, which the base install leaves out: {fix}",
                   err=True)
        raise SystemExit(1) from err
