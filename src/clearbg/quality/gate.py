"""The quality gate as the removal pipeline and the server see it: a score for every mask and,
under a threshold, a hand-off to review.

:class:`Scorer` turns a :class:`~clearbg.inference.predictor.Prediction` into the model version's
calibrated confidence. :class:`QualityGate` adds the threshold and what to do with a photo under
it (``send``: the review queue's enqueue, wired by ``clearbg.review.gate``); this layer does not
know the queue, only that something takes the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from clearbg.inference.predictor import Prediction, Predictor
from clearbg.models.hub import ModelRef
from clearbg.quality.calibration import Calibration
from clearbg.quality.features import signals
from clearbg.quality.store import load_calibration


@dataclass(frozen=True)
class Scorer:
    """A model version's confidence score.

    Attributes:
        calibration: the version's fitted calibration.
        flip: also run the mirrored photo (twice the model time; ranks photos better).
    """

    calibration: Calibration
    flip: bool = False

    @property
    def model(self) -> str:
        """The model version the scores belong to."""
        return self.calibration.model

    def score(self, prediction: Prediction) -> float:
        """The confidence (a predicted IoU, 0..1, 4 decimals) of one prediction."""
        combiner = self.calibration.combiner(prediction.flipped is not None, prediction.sides is not None)
        return round(combiner.score(signals(prediction)), 4)

    def threshold_for_share(self, share: float, predictor: Predictor) -> float:
        """The score under which ``share`` of the calibration photos fell, for this run's variant."""
        return round(self.calibration.threshold_for_share(share, flip=self.flip, sides=predictor.has_sides), 4)

    @classmethod
    def for_model(cls, model: ModelRef, *, flip: bool = False) -> Scorer | None:
        """The scorer of ``model``'s current version, or None when it has no calibration.

        Raises:
            CalibrationError: its calibration belongs to other weights or is unreadable.
        """
        calibration = load_calibration(model)
        return None if calibration is None else cls(calibration, flip)


@dataclass(frozen=True)
class Candidate:
    """A photo under the gate's threshold, with everything review needs.

    Attributes:
        source: the photo's URI (``upload`` over HTTP); data: its bytes when already in hand.
        image: the decoded, upright photo; prob: its probability map (full size).
        score, threshold, model: the confidence, the gate's threshold, the model version.
        output: where its cutout was written ("" when answered over HTTP).
        size: the photo's own (width, height) when ``image`` is a smaller copy of it (the
            server's ``size`` option); review gets the mask at the photo's own size.
    """

    source: str
    image: Image.Image
    prob: np.ndarray
    score: float
    threshold: float
    model: str
    output: str = ""
    data: bytes | None = None
    size: tuple[int, int] | None = None

    def full_prob(self) -> np.ndarray:
        """The probability map at the photo's own size."""
        if self.size is None or self.size == self.image.size:
            return self.prob
        return np.asarray(Image.fromarray(self.prob.astype(np.float32), mode="F").resize(
            self.size, Image.Resampling.BILINEAR))


@dataclass(frozen=True)
class QualityGate:
    """Score every mask; send those under ``threshold`` to ``send`` (None: score only)."""

    scorer: Scorer
    threshold: float | None = None
    send: Callable[[Candidate], None] | None = None

    def judge(self, prediction: Prediction, *, source: str, image: Image.Image, output: str = "",
              data: bytes | None = None, size: tuple[int, int] | None = None) -> tuple[float, bool]:
        """Score one prediction and send it to review when it is under the threshold.

        Returns:
            (the score, whether it was sent to review).

        Raises:
            ClearbgError: sending it failed (e.g. ``ReviewError``: the queue is unreachable).
        """
        score = self.scorer.score(prediction)
        review = self.threshold is not None and score < self.threshold
        if review and self.send is not None:
            self.send(Candidate(source, image, prediction.prob, score, self.threshold, self.scorer.model, output, data,
                                size))
        return score, review
