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
