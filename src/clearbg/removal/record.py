"""One photo's result, the same record for ``clearbg remove``, both batch engines and
``results.parquet``: defined once here, with its column types for Arrow and Spark."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from clearbg import storage

_SPARK_TYPES = {"str": "string", "float": "double", "float | None": "double", "bool": "boolean"}


@dataclass(frozen=True)
class PhotoResult:
    """What happened to one photo.

    Attributes:
        relpath: the photo's path relative to the input it was listed from.
        uri: the photo's full path or URI.
        status: ``ok`` or ``failed``.
        error: why it failed (empty when ok).
        confidence: the quality score of its mask, a predicted IoU (``clearbg.quality``; None when
            it failed or the model has no calibration).
        seconds: time spent on it (decode to encoded output).
        output: where its output was written (empty when it failed).
        review: its confidence was under the gate's threshold and it was sent to the review queue.
    """

    relpath: str
    uri: str
    status: str
    error: str = ""
    confidence: float | None = None
    seconds: float = 0.0
    output: str = ""
    review: bool = False

    @classmethod
    def ok(cls, ref: storage.ImageRef, seconds: float, *, confidence: float | None, output: str,
           review: bool = False) -> PhotoResult:
        return cls(ref.relpath, ref.uri, "ok", "", confidence, round(seconds, 4), output, review)

    @classmethod
    def failed(cls, ref: storage.ImageRef, error: str) -> PhotoResult:
        return cls(ref.relpath, ref.uri, "failed", error, None, 0.0, "", False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RESULT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(PhotoResult))
SPARK_SCHEMA = ", ".join(f"{f.name} {_SPARK_TYPES[str(f.type)]}" for f in fields(PhotoResult))
