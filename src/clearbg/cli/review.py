"""``clearbg review [--host 127.0.0.1] [--port 8700] [--queue review/queue.db]``"""

from __future__ import annotations

import click

from clearbg.errors import ClearbgError, printable
from clearbg.review.queue import DEFAULT_LEASE_S, DEFAULT_QUEUE


@click.command("review")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --token.")
@click.option("--port", default=8700, show_default=True, type=int)
@click.option("--queue", "queue_url", default=DEFAULT_QUEUE, show_default=True,
              help="The review queue: a SQLite file or a database URL.")
@click.option("--queue-images", default=None, help="Where its images are, if not where the queue says.")
@click.option("--token", envvar="CLEARBG_REVIEW_TOKEN", default=None,
              help="Access token (16+ characters) every request must carry; required off loopback. Prefer the "
                   "CLEARBG_REVIEW_TOKEN environment variable: a token on the command line shows in `ps`.")
@click.option("--feedback", default=None,
              help="Training-data folder or s3:// prefix to keep up to date after every decision (images/, masks/, "
                   "pairs.csv with provenance, rejected.csv): what `clearbg prepare` and `clearbg retrain` read.")
@click.option("--dataset", default=None,
              help="A prepared, clustered dataset: /types then lets a person move photos between product types.")
@click.option("--lease", "lease_s", default=DEFAULT_LEASE_S, show_default=True,
              help="Seconds a claimed item stays a reviewer's without activity (the open page renews it).")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
def review_command(host, port, queue_url, queue_images, token, feedback, dataset, lease_s, log_level):
    """Review the doubtful cutouts in the browser: accept, reject, or repaint the mask.

    \b
    Example:
      clearbg review --feedback data/feedback     # then open http://127.0.0.1:8700/
      CLEARBG_REVIEW_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe())') \\
        clearbg review --host 0.0.0.0     # reviewers open http://HOST:8700/?token=...
    """
    import uvicorn

    from clearbg.review.app import ReviewAppSettings, create_app

    try:
        app = create_app(ReviewAppSettings(queue=queue_url, images=queue_images, feedback=feedback, dataset=dataset,
                                           host=host, token=token or None, lease_s=lease_s))
    except ClearbgError as err:
        raise click.ClickException(f"not serving: {printable(str(err))}") from err
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"review page: http://{shown}:{port}/" + ("?token=..." if token else ""), err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
