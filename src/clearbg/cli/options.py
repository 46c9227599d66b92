"""Option types shared by several commands."""

from __future__ import annotations

import click

from clearbg.inference.edges import REFINE_MODES
from clearbg.inference.shadow import SHADOW_KINDS, Shadow
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
    from clearbg.review import DEFAULT_QUEUE

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


def edge_options(command):
    """Add the edge and shadow options of ``remove`` and ``batch`` (README "Edges").

    The matting flags keep rembg's names and short forms (``-a`` aside: here ``--refine
    matting``), so its users find them.
    """
    decorators = [
        click.option("--clean/--no-clean", default=True, show_default=True,
                     help="Harden near-certain regions and keep a narrow soft band at the edge (no haze "
                          "of the background)."),
        click.option("--drop-fragments", is_flag=True,
                     help="With --clean: drop separate parts far smaller than the product (strangers, smudges)."),
        click.option("--fill-holes", is_flag=True, help="With --clean: fill pin holes in the product."),
        click.option("--refine", type=click.Choice(REFINE_MODES), default="off", show_default=True,
                     help="Redraw the edge at full resolution: guided (filter by the photo) or matting "
                          "(closed-form alpha matting; pip install 'clearbg[matting]')."),
        click.option("-af", "--alpha-matting-foreground-threshold", type=click.IntRange(0, 255), default=240,
                     show_default=True, help="--refine matting: mask level (0-255) above which it is product."),
        click.option("-ab", "--alpha-matting-background-threshold", type=click.IntRange(0, 255), default=10,
                     show_default=True, help="--refine matting: mask level (0-255) below which it is background."),
        click.option("-ae", "--alpha-matting-erode-size", type=click.IntRange(0, 1000), default=10,
                     show_default=True, help="--refine matting: pixels both regions shrink by (a wider unknown band)."),
        click.option("-dc", "--decontaminate", is_flag=True,
                     help="Replace the old background's colour in the soft edge by the product's own, so no "
                          "halo shows on --bg-color (pip install 'clearbg[matting]')."),
        click.option("--shadow", type=click.Choice(SHADOW_KINDS), default=None,
                     help="A soft shadow under the product: contact (on the floor at its base) or drop "
                          "(its silhouette offset down-right)."),
        click.option("--shadow-opacity", type=click.FloatRange(0, 1), default=None,
                     help="--shadow darkness, 0-1 (default 0.5)."),
        click.option("--shadow-blur", type=click.FloatRange(0, 0.5), default=None,
                     help="--shadow softness as a share of the product's height (default 0.03)."),
        click.option("--shadow-offset", default=None,
                     help="--shadow drop: RIGHT,DOWN as shares of the product's height (default 0.02,0.03)."),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def edge_settings(params: dict) -> dict:
    """``make_options`` keywords from the values of ``edge_options`` (popped from ``params``).

    Raises:
        click.UsageError: a shadow parameter without ``--shadow``.
        ValueError: a malformed ``--shadow-offset``.
    """
    kind = params.pop("shadow")
    tuning = {name: params.pop(f"shadow_{name}") for name in ("opacity", "blur", "offset")}
    shadow = None
    if kind is not None:
        if tuning["offset"] is not None:
            tuning["offset"] = Shadow.parse_offset(tuning["offset"])
        shadow = Shadow(kind, **{name: value for name, value in tuning.items() if value is not None})
    elif any(value is not None for value in tuning.values()):
        given = ", ".join(f"--shadow-{name}" for name, value in tuning.items() if value is not None)
        raise click.UsageError(f"{given} tunes a shadow: add --shadow contact or --shadow drop")
    names = ("clean", "drop_fragments", "fill_holes", "refine", "alpha_matting_foreground_threshold", "alpha_matting_background_threshold",
             "alpha_matting_erode_size", "decontaminate")
    return {**{name: params.pop(name) for name in names}, "shadow": shadow}
