"""Every error clearbg raises on purpose: one root, one subclass per kind of problem.

Messages name the input, say what was expected and what to do next. Lower-level errors are
wrapped with ``raise ... from err`` so the cause stays visible. A value that came from outside
(a request parameter, a URL) is shown through :func:`shown`, cut to a readable length.
"""

SHOWN_CHARS = 80


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with an ellipsis.

    A message must name the bad input, but echoing a 5 MB parameter back in full makes the
    error unreadable and turns the server into an amplifier.

    Example:
        >>> shown("#fff"), shown("z" * 100, limit=10)
        ("'#fff'", "'zzzzzzzz…")
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ClearbgError(Exception):
    """Root of all clearbg errors; catch this to handle any of them."""


class ImageError(ClearbgError):
    """An image could not be decoded: corrupt, truncated, unsupported or not an image."""


class ImageTooLarge(ImageError):
    """An image has more pixels than the configured limit (decompression-bomb guard)."""


class OutputTooLarge(ClearbgError):
    """A result is larger than its output format can store (WebP 16383 px a side, JPEG 65500)."""


class StorageError(ClearbgError):
    """A path or bucket could not be listed, read or written."""


class UnknownModel(ClearbgError):
    """A model name is not in the registry and is not a path to a checkpoint."""


class WeightsNotFound(ClearbgError):
    """Pretrained weights are not in the local cache yet."""


class WeightsIntegrityError(ClearbgError):
    """Downloaded weights do not match the sha256 recorded in the registry."""


class CheckpointMismatch(ClearbgError):
    """A state dict does not fit the model: missing, unexpected or wrongly shaped keys."""


class RegistryError(ClearbgError):
    """The model registry could not do what was asked (store unreachable, bad name, no alias ...)."""


class CalibrationError(ClearbgError):
    """A model has no confidence calibration, or the one found belongs to other weights."""


class ReviewError(ClearbgError):
    """The review queue cannot be opened or cannot do what was asked (unknown item, bad decision ...)."""


class LeaseLost(ReviewError):
    """A reviewer's claim on an item ran out and the item went to someone else."""


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped, for terminals and logs.

    File names come from users and may hold a newline or an escape sequence; printed as they
    are, ``a.jpg\\nFAILED b.jpg: ...`` would forge a line of a failure report. Escapes follow
    Python's own (``\\n``, ``\\x1b``, ``\\u2028``); printable text, accents included, is kept.

    Example:
        >>> printable("a.jpg\\nFAILED b.jpg")
        'a.jpg\\\\nFAILED b.jpg'
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
