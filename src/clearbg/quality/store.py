"""Where a model version's calibration lives: beside the model it scores.

* a registry spec (``u2netp``): ``<clearbg cache>/weights/<spec>.confidence.json`` when a studio
  fitted its own (``clearbg calibrate --model u2netp --data DATASET:val``), else the one shipped
  with clearbg (``clearbg/quality/calibrations/<spec>.json``, fitted by ``bench/confidence.py``);
* a checkpoint or export file ``PATH``: ``PATH.confidence.json``;
* a registered version ``models:/NAME@ALIAS``: an artifact of the version, fitted by
  ``clearbg register`` (tag ``clearbg.confidence``).

Each calibration names the model version it was fitted for (:func:`model_version`: the weights'
sha256 for files and specs, ``models:/NAME/VERSION`` for the registry); a calibration found for
other weights (a retrained ``best.pt`` overwrote the file) is refused, never silently applied.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from clearbg import storage
from clearbg.errors import CalibrationError, StorageError
from clearbg.models.download import cache_dir
from clearbg.models.hub import ModelRef, is_checkpoint_path
from clearbg.models.mlflow_uris import is_mlflow_uri, registered_version, resolve_confidence_uri
from clearbg.models.specs import get_spec
from clearbg.quality.calibration import Calibration

SUFFIX = ".confidence.json"
SHIPPED = Path(__file__).with_name("calibrations")


def model_version(model: ModelRef) -> str:
    """The identity a calibration is fitted for.

    Example:
        >>> model_version("u2netp")
        'u2netp.official@309c8469258d'

    Raises:
        CalibrationError: a reference without a stable version (a ``runs:/`` URI, a module).
    """
    text = str(model)
    if is_mlflow_uri(text):
        version = registered_version(text)
        if version is None:
            raise CalibrationError(f"{text} has no registered version to calibrate; register it "
                                   "(`clearbg register`), which fits its calibration")
        return version
    if is_checkpoint_path(model):
        path = Path(text)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return f"{path.name}@{digest.hexdigest()[:12]}"
    spec = get_spec(text)
    if spec.weights is None:
        raise CalibrationError(f"{spec.name} has no released weights, so nothing to calibrate; train it, "
                               "then calibrate the checkpoint")
    return f"{spec.name}@{spec.weights.sha256[:12]}"


def calibration_paths(model: ModelRef) -> list[Path]:
    """Where to look for a file or spec's calibration, first found wins (empty for the registry)."""
    text = str(model)
    if is_mlflow_uri(text):
        return []
    if is_checkpoint_path(model):
        return [Path(text + SUFFIX)]
    spec = get_spec(text)
    return [cache_dir() / "weights" / f"{spec.name}{SUFFIX}", SHIPPED / f"{spec.name}.json"]


def load_calibration(model: ModelRef) -> Calibration | None:
    """The calibration of ``model``'s current version, or None when it has none.

    Raises:
        CalibrationError: the calibration found was fitted for other weights, or is unreadable.
    """
    text = str(model)
    found = resolve_confidence_uri(text) if is_mlflow_uri(text) else next(
        (p for p in calibration_paths(model) if p.is_file()), None)
    if found is None:
        return None
    calibration = Calibration.from_json(Path(found).read_text(), str(found))
    version = model_version(model)
    if calibration.model != version:
        raise CalibrationError(
            f"the confidence calibration {found} was fitted for {calibration.model}, but {text} is now {version} "
            f"(its weights changed); fit it again: clearbg calibrate --model {text} --data DATASET:val")
    return calibration


def save_calibration(calibration: Calibration, model: ModelRef) -> str:
    """Write ``calibration`` beside a file or spec model (atomically) and return where.

    Raises:
        CalibrationError: a registry model (``clearbg register`` stores those with the version).
    """
    paths = calibration_paths(model)
    if not paths:
        raise CalibrationError(f"{model} is a registry model: its calibration is stored with its version "
                               "(`clearbg calibrate` does that through the registry)")
    try:
        storage.write_bytes(str(paths[0]), calibration.to_json().encode())
    except StorageError as err:
        raise CalibrationError(f"cannot save the calibration of {model}: {err}") from err
    return str(paths[0])
