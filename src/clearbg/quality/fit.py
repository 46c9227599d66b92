"""Fit a model version's calibration on a prepared dataset's validation split.

Every photo of the split goes through the predictor with side outputs and the flipped pass; its
signals are computed as in use and its mask is scored against the original mask at full
resolution (threshold 0.5, as ``clearbg evaluate``). Then :func:`fit_calibration` fits every
variant. About twice an evaluation's time (the flipped pass).

Example:
    >>> calibration = calibrate("u2netp", "data/fashion-320:val")  # doctest: +SKIP
    >>> save_calibration(calibration, "u2netp")                    # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from clearbg.errors import ClearbgError
from clearbg.evaluate.run import clean_options, load_pair, split_rows
from clearbg.evaluate.settings import parse_data_arg
from clearbg.inference.predictor import Predictor
from clearbg.models.hub import ModelRef
from clearbg.quality.calibration import Calibration, fit_calibration
from clearbg.quality.features import signals
from clearbg.quality.store import model_version


def score_split(predictor: Predictor, data: str, *, split: str = "val", progress: bool | None = None,
                limit: int | None = None) -> pd.DataFrame:
    """Signals and true IoU of every photo of a split.

    Args:
        predictor: the model.
        data: a prepared dataset, optionally ``DATASET:split`` (the split in ``data`` wins).
        limit: only the first photos (by id).

    Returns:
        One row per photo: ``id``, ``iou``, every signal, ``seconds`` (predict with the flipped
        pass and the signals; decode and scoring left out).

    Raises:
        ClearbgError: the split is unknown or empty, or no photo could be read.
    """
    from tqdm import tqdm

    dataset, split = parse_data_arg(data, default_split=split)
    rows = split_rows(dataset, split, limit)
    options = clean_options(dataset)
    show = sys.stderr.isatty() if progress is None else progress
    records, failed = [], {}
    for row in tqdm(rows.to_dict("records"), desc=f"calibrate {dataset}:{split}", unit="img", disable=not show):
        try:
            photo, truth = load_pair(row["image"], row["mask"], options)
        except ClearbgError as err:
            failed[row["id"]] = str(err)
            continue
        t0 = time.perf_counter()
        [prediction] = predictor.predict_detailed([photo], flip=True)
        found = signals(prediction)
        seconds = time.perf_counter() - t0
        mask = prediction.prob > 0.5
        union = np.logical_or(mask, truth).sum()
        iou = 1.0 if union == 0 else float(np.logical_and(mask, truth).sum()) / float(union)
        records.append({"id": row["id"], "iou": iou, **found, "seconds": seconds})
    if not records:
        first = next(iter(failed.items()), ("-", "no photos"))
        raise ClearbgError(f"no photo of {dataset}:{split} could be scored; e.g. {first[0]}: {first[1]}")
    return pd.DataFrame.from_records(records)


def calibrate(model: ModelRef, data: str, *, precision: str = "auto", device: str | None = None,
              progress: bool | None = None, version: str | None = None) -> Calibration:
    """Fit the confidence calibration of ``model`` on ``data``'s validation split.

    Args:
        model: a spec name, checkpoint or export file, or a registered ``models:/`` version.
        data: ``DATASET`` (its ``val`` split) or ``DATASET:split``.
        precision, device: on the PyTorch engine, which gives the side outputs every variant
            needs (``auto``: fp32 on CPU). The CPU default of ``clearbg remove`` (int8 on ONNX
            Runtime) uses the variants without sides; its masks agree with fp32's within noise.
        version: the model version to record (default: ``model_version(model)``); registering
            passes ``models:/NAME/VERSION`` for the checkpoint it is registering.

    Raises:
        CalibrationError: too few photos; ClearbgError: the dataset or the model cannot be read.
    """
    dataset, split = parse_data_arg(data, default_split="val")
    predictor = Predictor(model, precision=precision, device=device, engine="torch")
    frame = score_split(predictor, f"{dataset}:{split}", progress=progress)
    features = frame.drop(columns=["id", "iou", "seconds"]).to_dict("records")
    return fit_calibration(features, frame["iou"].tolist(), model=version or model_version(model),
                           data=f"{dataset}:{split}")
