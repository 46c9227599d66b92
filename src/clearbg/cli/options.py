"""Option types shared by several commands."""

from __future__ import annotations

import click

from clearbg.removal.pipeline import FORMATS


class OutputFormat(click.Choice):
    """``--format`` of remove and batch: png, jpg or webp, any case, with ``jpeg`` meaning jpg.

    People type the name of the format (JPEG) as often as the suffix (.jpg); both name one
    encoder, and the files are written as ``.jpg``. TIFF is not offered: the encoder writes
    PNG, JPEG and WebP only.
    """

    ALIASES = {"jpeg": "jpg"}

    def __init__(self) -> None:
        super().__init__(FORMATS, case_sensitive=False)

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            value = self.ALIASES.get(value.lower(), value)
        return super().convert(value, param, ctx)


def review_options(command):
    """``--review-below``, ``--review-share``, ``--queue``, ``--queue-images`` (remove, batch, serve)."""
    from clearbg.review.queue import DEFAULT_QUEUE

    for decorator in reversed([
        click.option("--review-below", type=float, default=None,
                     help="Send photos whose confidence (a predicted IoU) is under this to the review queue, e.g. 0.95."),
        click.option("--review-share", type=float, default=None,
                     help="Or: the threshold that sent this share of the model's calibration photos, e.g. 0.1."),
        click.option("--queue", "queue_url", default=DEFAULT_QUEUE, show_default=True,
                     help="Review queue: a SQLite file, or a database URL (postgresql://user@host/db)."),
        click.option("--queue-images", default=None,
                     help="Folder or s3:// prefix for the queue's photos and masks (default: beside the SQLite file)."),
    ]):
        command = decorator(command)
    return command


def review_settings(review_below, review_share, queue_url, queue_images):
    """The ``ReviewSettings`` of the options above."""
    from clearbg.review.gate import ReviewSettings

    return ReviewSettings(below=review_below, share=review_share, queue=queue_url, images=queue_images)
