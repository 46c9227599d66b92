"""Wire the quality gate to the review queue: what ``clearbg remove``, ``clearbg batch`` (both
engines) and ``clearbg serve`` build from their ``--review-*`` options.

Without a threshold the gate only scores (the cheap signals, no extra pass), and only when the
model has a calibration. With ``--review-below T`` or ``--review-share S`` it needs one (the
error says how to fit it), scores with the flipped pass too (twice the model time; it ranks
photos better) and enqueues every photo under the threshold with its photo, predicted mask,
score and model version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from clearbg import storage
from clearbg.errors import CalibrationError
from clearbg.inference.predictor import Predictor
from clearbg.quality.gate import Candidate, QualityGate, Scorer
from clearbg.review import DEFAULT_QUEUE

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewSettings:
    """The ``--review-*`` options (picklable: Spark workers build their own gate from them).

    Attributes:
        below: send photos whose confidence (a predicted IoU) is under this.
        share: or: the threshold under which this share of the calibration photos fell (0.1).
        queue, images: the review queue (``ReviewQueue``'s ``url`` and ``images``).
        flip: score with the flipped pass (default on when there is a threshold).
    """

    below: float | None = None
    share: float | None = None
    queue: str = DEFAULT_QUEUE
    images: str | None = None
    flip: bool = True

    @property
    def active(self) -> bool:
        return self.below is not None or self.share is not None


def build_gate(predictor: Predictor, settings: ReviewSettings | None = None, *, job: str = "") -> QualityGate | None:
    """The gate for a run of ``predictor``'s model.

    Args:
        predictor: the loaded model; its ``model`` reference finds the calibration.
        settings: the review options; None or no threshold: score only.
        job: recorded with each enqueued item (``batch DST``, ``remove DIR``, ``serve``).

    Returns:
        A gate, or None when there is no threshold and the model has no calibration, or a stale
        one (other weights: a warning says how to refit it); then outputs carry no score.

    Raises:
        CalibrationError: a threshold was asked for and the model has no calibration (the message
            gives the command that fits one) or one for other weights, or both ``below`` and
            ``share`` were given.
        ReviewError: the queue cannot be opened.
    """
    settings = settings or ReviewSettings()
    if settings.below is not None and settings.share is not None:
        raise CalibrationError("give --review-below or --review-share, not both")
    if not settings.active:
        try:
            scorer = Scorer.for_model(predictor.model) if predictor.model is not None else None
        except CalibrationError as err:  # removal goes on; only a score nobody should trust is left out
            _log.warning("no confidence scores: %s", err)
            return None
        return None if scorer is None else QualityGate(scorer)
    scorer = Scorer.for_model(predictor.model, flip=settings.flip) if predictor.model is not None else None
    if scorer is None:
        raise CalibrationError(
            f"{predictor.source} has no confidence calibration, so no threshold can be applied; fit one on "
            f"photos with true masks: clearbg calibrate --model {predictor.model} --data DATASET:val")
    if settings.below is not None:
        if not 0.0 < settings.below <= 1.0:
            raise CalibrationError(f"--review-below is a confidence (a predicted IoU, 0-1), got {settings.below}")
        threshold = float(settings.below)
    else:
        threshold = scorer.threshold_for_share(settings.share, predictor)
    from clearbg.review.queue import ReviewQueue

    queue = ReviewQueue(settings.queue, images=settings.images)

    def send(candidate: Candidate) -> None:
        data = candidate.data if candidate.data is not None else storage.read_bytes(candidate.source)
        queue.enqueue(data, candidate.full_prob(), score=candidate.score, model=candidate.model, source=candidate.source,
                      job=job, output=candidate.output, threshold=candidate.threshold)

    return QualityGate(scorer, threshold, send)
