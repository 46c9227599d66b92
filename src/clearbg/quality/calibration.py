"""The confidence score: a model version's quality signals, combined into a predicted IoU.

A :class:`Calibration` belongs to one model version. It holds a small linear model per set of
signals a run can afford (with or without the flipped second pass, with or without side outputs:
an ONNX export has none), each fitted on a validation split by ridge regression (scikit-learn)
to predict ``log(1 - IoU)`` from log-scaled signals: errors span two orders of magnitude
(IoU 0.99 against 0.6), and the log keeps the few disasters from dominating the fit. The score is
``1 - exp(prediction)``, an estimate of the photo's IoU, so ``--review-below 0.95`` reads as "send
what probably has IoU under 0.95".

It is stored as JSON (coefficients, no pickles) with the score quantiles it gave on the
validation photos, from which ``threshold_for_share`` turns "send 10 % to review" into a threshold.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from clearbg.errors import CalibrationError

VERSION = 1
EPS = 1e-3
MIN_PHOTOS = 8
"""Fewer validation photos than this cannot fit even one coefficient per signal sensibly."""

# Which signals each kind of run combines (see clearbg.quality.features). "flip" runs the network
# on the mirrored photo too (twice the model time); "sides" needs U2-Net's side outputs.
VARIANTS: dict[str, tuple[str, ...]] = {
    "flip+sides": ("uncertain", "flip_iou", "side_iou_mean"),
    "flip": ("uncertain", "flip_iou"),
    "sides": ("uncertain", "side_iou_mean", "self_iou", "holes", "stray_share"),
    "plain": ("uncertain", "self_iou", "holes", "stray_share"),
}
# How each signal enters the linear model: agreements as log(1 - x) (distance from perfect),
# shares as log(x), counts as they are (already log1p).
_TRANSFORM = {"flip_iou": "log1m", "side_iou_mean": "log1m", "self_iou": "log1m", "uncertain": "log",
              "stray_share": "log", "holes": "id"}


def variant_name(flip: bool, sides: bool) -> str:
    return "+".join(part for part, on in (("flip", flip), ("sides", sides)) if on) or "plain"


def _transform(name: str, value: float) -> float:
    kind = _TRANSFORM[name]
    if kind == "log1m":
        return math.log(max(1.0 - value, 0.0) + EPS)
    if kind == "log":
        return math.log(max(value, 0.0) + EPS)
    return float(value)


@dataclass(frozen=True)
class Combiner:
    """One fitted linear model: signals -> predicted log(1 - IoU)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    alpha: float
    quantiles: tuple[float, ...]  # its scores on the validation photos at 0, 1, ..., 100 %

    def score(self, signals: Mapping[str, float]) -> float:
        x = np.array([_transform(f, signals[f]) for f in self.features])
        z = (x - np.array(self.mean)) / np.array(self.scale)
        predicted = float(z @ np.array(self.coef) + self.intercept)
        return float(min(1.0, max(0.0, 1.0 - math.exp(predicted))))


@dataclass(frozen=True)
class Calibration:
    """How to turn a model version's signals into its confidence score.

    Attributes:
        model: the model version it belongs to (``clearbg.quality.store.model_version``).
        data: the validation split it was fitted on; photos: how many.
        combiners: one fitted model per variant of ``VARIANTS``.
        metrics: per variant, how its score ranked the validation photos (in-sample Spearman).
    """

    model: str
    data: str
    photos: int
    combiners: dict[str, Combiner]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    version: int = VERSION

    def combiner(self, flip: bool, sides: bool) -> Combiner:
        """The combiner for what a run computes."""
        return self.combiners[variant_name(flip, sides)]

    def threshold_for_share(self, share: float, *, flip: bool = True, sides: bool = True) -> float:
        """The score under which ``share`` of the validation photos fell: send that share to review.

        Raises:
            CalibrationError: ``share`` not in (0, 1).
        """
        if not 0.0 < share < 1.0:
            raise CalibrationError(f"a review share must be between 0 and 1 (0.1 = 10 %), got {share}")
        quantiles = np.array(self.combiner(flip, sides).quantiles)
        return float(np.interp(share * 100.0, np.arange(len(quantiles)), quantiles))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, name: str = "calibration") -> Calibration:
        """Raises: CalibrationError: not a calibration this clearbg reads (names ``name``)."""
        try:
            data = json.loads(text)
            if data.get("version") != VERSION:
                raise ValueError(f"format version {data.get('version')!r}, this clearbg reads {VERSION}")
            combiners = {k: Combiner(**{f: tuple(v) if isinstance(v, list) else v for f, v in c.items()})
                         for k, c in data["combiners"].items()}
            missing = set(VARIANTS) - set(combiners)
            if missing:
                raise ValueError(f"no combiner for {', '.join(sorted(missing))}")
            return cls(model=data["model"], data=data["data"], photos=int(data["photos"]), combiners=combiners,
                       metrics=data.get("metrics", {}), version=VERSION)
        except (ValueError, KeyError, TypeError) as err:
            raise CalibrationError(f"{name} is not a clearbg confidence calibration ({err}); "
                                   "fit it again with `clearbg calibrate`") from err


def fit_calibration(signals: Sequence[Mapping[str, float]], iou: Sequence[float], *, model: str,
                    data: str) -> Calibration:
    """Fit every variant's combiner on validation photos.

    Args:
        signals: per photo, the signals of ``clearbg.quality.features.signals`` computed with side
            outputs and the flipped pass (every variant is fitted from them).
        iou: per photo, the true IoU of its mask.
        model, data: the model version and the split, recorded in the result.

    Raises:
        CalibrationError: fewer than ``MIN_PHOTOS`` photos, or a signal missing.
    """
    from scipy.stats import spearmanr
    from sklearn.linear_model import RidgeCV

    if len(signals) < MIN_PHOTOS:
        raise CalibrationError(f"{data} has {len(signals)} scored photos; a calibration needs at least "
                               f"{MIN_PHOTOS} (use a larger validation split)")
    target = np.log(np.clip(1.0 - np.asarray(iou, dtype=float), 0.0, 1.0) + EPS)
    combiners, metrics = {}, {}
    for name, features in VARIANTS.items():
        try:
            x = np.array([[_transform(f, s[f]) for f in features] for s in signals])
        except KeyError as err:
            raise CalibrationError(f"signal {err} missing: fit with side outputs and the flipped pass on") from err
        mean, scale = x.mean(0), x.std(0)
        scale[scale == 0] = 1.0
        ridge = RidgeCV(alphas=np.logspace(-2, 3, 21)).fit((x - mean) / scale, target)
        partial = Combiner(features, tuple(mean), tuple(scale), tuple(float(c) for c in ridge.coef_),
                           float(ridge.intercept_), float(ridge.alpha_), ())
        scores = np.array([partial.score(s) for s in signals])
        quantiles = tuple(float(q) for q in np.percentile(scores, np.arange(101)))
        combiners[name] = Combiner(**{**asdict(partial), "quantiles": quantiles})
        metrics[name] = {"spearman": round(float(spearmanr(scores, iou)[0]), 4),
                         "mean_abs_error": round(float(np.mean(np.abs(scores - np.asarray(iou)))), 4)}
    return Calibration(model=model, data=data, photos=len(signals), combiners=combiners, metrics=metrics)
