"""How an evaluation scores a model: one typed object, passed through evaluate, register and promote.

Its :meth:`EvalSettings.fingerprint` says whether two evaluations measured the same thing (same
images, same scoring, same precision), which is what lets ``promote`` reuse the evaluation stored
at registration instead of running it again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from clearbg import storage
from clearbg.data.manifest import DATASET_INFO, read_manifest
from clearbg.errors import ClearbgError

SPLITS = ("train", "val", "test", "all")  # "all": every row of the manifest


@dataclass(frozen=True)
class EvalSettings:
    """Scoring settings of an evaluation.

    Attributes:
        device: ``cpu``, ``cuda`` ... (None: CUDA when available).
        precision: ``fp32`` (reproducible numbers), ``bf16``, ``fp16`` or ``auto`` (what
            ``clearbg remove`` runs on this machine).
        threshold: a pixel is product where the probability is above this.
        boundary_tolerance: pixels an outline may be off (``boundary_f``, ``error_regions``).
        limit: score only the first N images of the split (by id), for a quick look.
        batch_size: photos per batch (see ``Predictor``); does not change the numbers.
        tta: test-time flip (``Predictor``'s ``tta``): each map the mean of the photo's and
            its mirror image's, for twice the cost.
    """

    device: str | None = None
    precision: str = "fp32"
    threshold: float = 0.5
    boundary_tolerance: int = 3
    limit: int | None = None
    batch_size: int | None = None
    tta: bool = False

    def resolved(self) -> tuple[str, str]:
        """(device type, precision) as they will run here (``auto`` and None made concrete)."""
        import torch

        from clearbg.inference.predictor import default_precision

        device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        precision = default_precision(device) if self.precision == "auto" else self.precision
        return device.type, precision

    def fingerprint(self, data: str) -> str:
        """A digest of what an evaluation with these settings measures on ``data``
        (``DATASET:split``): the dataset's manifest and options, the split, the limit, the scoring
        settings and the clearbg version. ``""`` when the dataset cannot be read (never reused then).

        Example:
            >>> EvalSettings(precision="fp32").fingerprint("data/fashion:test")  # doctest: +SKIP
            '3f1c...'
        """
        dataset, split = parse_data_arg(data)
        try:
            manifest = read_manifest(dataset)
            info_uri = storage.join(dataset, DATASET_INFO)
            info = storage.read_bytes(info_uri) if storage.exists(info_uri) else b""
        except (OSError, ClearbgError):
            return ""
        device, precision = self.resolved()
        measured = {
            "manifest": hashlib.sha256(manifest.sort_values("id").to_csv(index=False).encode()).hexdigest(),
            "info": hashlib.sha256(info).hexdigest(),
            "split": split,
            "limit": self.limit,
            "threshold": float(self.threshold),
            "boundary_tolerance": int(self.boundary_tolerance),
            "precision": precision,
            "device": device,
            "tta": bool(self.tta),
            "clearbg": package_version(),
        }
        return hashlib.sha256(json.dumps(measured, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> EvalSettings:
        """The settings an ``Evaluation.settings`` record was made with (extra keys ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        if isinstance(values.get("device"), str):
            values["device"] = values["device"].split(":")[0]
        return cls(**values)


def parse_data_arg(data: str, default_split: str = "test") -> tuple[str, str]:
    """Split ``DATASET[:split]`` into the dataset and the split name.

    A suffix counts as a split only when it has no ``/`` (so ``s3://bucket/ds`` is a dataset,
    ``s3://bucket/ds:val`` is its val split).

    Args:
        data: a dataset folder or URI, optionally followed by ``:train``, ``:val``, ``:test`` or
            ``:all``.
        default_split: the split when ``data`` names none.

    Returns:
        ``(dataset, split)``.

    Raises:
        ClearbgError: the split is not one of :data:`SPLITS`, or the dataset part is empty.

    Example:
        >>> parse_data_arg("data/fashion:val")
        ('data/fashion', 'val')
        >>> parse_data_arg("s3://bucket/fashion")
        ('s3://bucket/fashion', 'test')
    """
    dataset, split = data, default_split
    head, sep, tail = data.rpartition(":")
    if sep and "/" not in tail and head not in ("", "s3", "gs", "file"):
        dataset, split = head, tail
    if not dataset:
        raise ClearbgError(f"no dataset in {data!r}: expected DATASET[:split], e.g. data/fashion:test")
    if split not in SPLITS:
        raise ClearbgError(f"unknown split {split!r} in {data!r}; choose one of {', '.join(SPLITS)}")
    return dataset, split


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clearbg")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"
