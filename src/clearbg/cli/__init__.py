"""``clearbg`` command line: a thin layer over the library, one file per command.

Commands are imported when called, so ``clearbg prepare`` does not pay for PyTorch.
"""

from __future__ import annotations

import difflib
import importlib
import sys

import click

from clearbg import __version__

# name -> "module:function" of each command
COMMANDS = {
    "remove": "clearbg.cli.remove:remove_command",
    "batch": "clearbg.cli.batch:batch_command",
    "watch": "clearbg.cli.watch:watch_command",
    "download": "clearbg.cli.download:download_command",
    "models": "clearbg.cli.models:models_command",
    "prepare": "clearbg.cli.prepare:prepare_command",
    "cluster": "clearbg.cli.cluster:cluster_command",
    "augment-preview": "clearbg.cli.augment_preview:augment_preview_command",
    "tune": "clearbg.cli.tune:tune_command",
    "train": "clearbg.cli.train:train_command",
    "interpolate": "clearbg.cli.interpolate:interpolate_command",
    "evaluate": "clearbg.cli.evaluate:evaluate_command",
    "register": "clearbg.cli.register:register_command",
    "promote": "clearbg.cli.promote:promote_command",
    "export": "clearbg.cli.export:export_command",
    "serve": "clearbg.cli.serve:serve_command",
    "web": "clearbg.cli.web:web_command",
    "calibrate": "clearbg.cli.calibrate:calibrate_command",
    "queue": "clearbg.cli.queue:queue_command",
    "review": "clearbg.cli.review:review_command",
    "retrain": "clearbg.cli.retrain:retrain_command",
}


class SuggestingGroup(click.Group):
    """A group that answers a mistyped command with the closest names ("Did you mean ...?")."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = click.utils.make_str(args[0]) if args else ""
        if args and self.get_command(ctx, name) is None and not name.startswith("-"):
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
            if close:
                ctx.fail(f"No such command {name!r}. Did you mean {' or '.join(repr(c) for c in close)}?")
        return super().resolve_command(ctx, args)


class _LazyGroup(SuggestingGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="clearbg")
def cli() -> None:
    """clearbg: background removal for product photos, from data to serving."""


# Optional third-party module -> the extra that installs it (pyproject.toml).
EXTRAS = {
    "pandas": "data", "pyarrow": "data", "sklearn": "data", "yaml": "data",
    "mlflow": "train", "optuna": "train", "tensorboard": "train", "matplotlib": "eval",
    "fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "starlette": "serve",
    "pyspark": "spark", "s3fs": "s3", "psycopg": "postgres", "pymatting": "matting", "numba": "matting",
}


def missing_extra(err: ImportError) -> str | None:
    """The pip command that installs what ``err`` says is missing, if it is one of our extras."""
    name = (err.name or "").split(".")[0]
    if not name and "s3fs" in str(err):  # fsspec: "Install s3fs to access S3"
        name = "s3fs"
    extra = EXTRAS.get(name)
    return None if extra is None else f"pip install 'clearbg[{extra}]'"


def main() -> None:
    # One name however it is started (`clearbg`, `python -m clearbg`): usage lines say `clearbg`
    # and shell completion always reads _CLEARBG_COMPLETE.
    try:
        cli(prog_name="clearbg")
    except ImportError as err:
        fix = missing_extra(err)
        if fix is None:
            raise
        command = next((a for a in sys.argv[1:] if a in COMMANDS), "this command")
        click.echo(f"Error: clearbg {command} needs {err.name or 's3fs'}, which the base install leaves out: {fix}",
                   err=True)
        raise SystemExit(1) from err
