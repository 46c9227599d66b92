"""``clearbg queue status|list|export``: what waits in the review queue."""

from __future__ import annotations

import datetime as dt

import click

from clearbg.errors import ClearbgError, printable
from clearbg.review.queue import DEFAULT_QUEUE, STATUSES


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _open(queue_url: str, queue_images: str | None):
    from clearbg.review.queue import ReviewQueue

    try:
        return ReviewQueue(queue_url, images=queue_images)
    except ClearbgError as err:
        raise click.ClickException(printable(str(err))) from err


_queue_option = click.option("--queue", "queue_url", default=DEFAULT_QUEUE, show_default=True,
                             help="The review queue: a SQLite file or a database URL.")
_images_option = click.option("--queue-images", default=None,
                              help="Where its images are, if not where the queue says (another mount point).")


@click.group("queue")
def queue_command() -> None:
    """See what waits in the review queue (photos under the quality gate's threshold).

    \b
    Examples:
      clearbg queue status
      clearbg queue list --status pending --limit 20
      clearbg queue export --out review.csv --queue postgresql://clearbg@db/review
    """


@queue_command.command("status")
@_queue_option
@_images_option
def status_command(queue_url, queue_images):
    """Counts by status, and how long the oldest waiting item has waited."""
    queue = _open(queue_url, queue_images)
    stats = queue.stats()
    queue.close()
    click.echo(f"queue    {printable(queue_url)}  (images: {printable(queue.images)})")
    click.echo(f"waiting  {stats.waiting}  (oldest enqueued {_when(stats.oldest_waiting)})")
    for status in STATUSES:
        click.echo(f"{status:8s} {getattr(stats, status)}")
    click.echo(f"total    {stats.total}")


@queue_command.command("list")
@_queue_option
@_images_option
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only items of this status.")
@click.option("--limit", type=int, default=20, show_default=True, help="At most this many (0: all).")
def list_command(queue_url, queue_images, status, limit):
    """Items, lowest confidence first (the order reviewers get them)."""
    queue = _open(queue_url, queue_images)
    items = list(queue.items(status, limit=limit or None))
    queue.close()
    click.echo(f"{'id':12s} {'score':>6s} {'status':9s} {'enqueued':20s} {'model':28s} source")
    for item in items:
        click.echo(f"{item.id[:12]} {item.score:6.4f} {item.status:9s} {_when(item.created):20s} "
                   f"{printable(item.model)[:28]:28s} {printable(item.source)}")
    if not items:
        click.echo("(no items)", err=True)


@queue_command.command("export")
@_queue_option
@_images_option
@click.option("--out", required=True, help="CSV file or s3:// key to write (atomically).")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only items of this status.")
def export_command(queue_url, queue_images, out, status):
    """Every item as CSV: ids, scores, model versions, decisions and the URIs of its images."""
    queue = _open(queue_url, queue_images)
    try:
        count = queue.export_csv(out, status)
    except ClearbgError as err:
        raise click.ClickException(printable(str(err))) from err
    finally:
        queue.close()
    click.echo(f"{count} items -> {printable(out)}", err=True)
