"""``clearbg web build --model NAME_OR_CHECKPOINT --out DIR``"""

from __future__ import annotations

import click

from clearbg.cli import SuggestingGroup
from clearbg.errors import ClearbgError
from clearbg.models.specs import DEFAULT_MODEL


@click.group("web", cls=SuggestingGroup)
def web_command() -> None:
    """The in-browser page: the model runs in the visitor's browser (onnxruntime-web)."""


@web_command.command("build")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Registry name, .pth/.pt checkpoint, models:/ URI, or a .onnx from `clearbg export`.")
@click.option("--out", required=True, help="The folder to write (static files for any http server).")
def build_command(model, out):
    """Write the page, model.onnx and onnxruntime-web as a static folder.

    Serve it over http (not file://); `clearbg serve` also serves the page at /app/.

    \b
    Examples:
      clearbg web build --model u2netp --out site
      python3 -m http.server -d site 8080   # then open http://localhost:8080/
    """
    from clearbg.web.site import build_site

    try:
        path = build_site(model, out)
    except ClearbgError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{path}/ (open index.html over http; serve with e.g. `python3 -m http.server -d {path}`)")
