"""The way back into training: reviewed pairs -> a fine-tuned challenger -> the registry's gate.

Example:
    >>> from clearbg.retrain import RetrainSettings, retrain                                   # doctest: +SKIP
    >>> print(retrain(RetrainSettings("shop", "data/shop", "data/feedback")).message)         # doctest: +SKIP
"""

from clearbg.retrain.run import RETRAIN_EXPERIMENT, RetrainError, RetrainResult, RetrainSettings, retrain

__all__ = ["RETRAIN_EXPERIMENT", "RetrainError", "RetrainResult", "RetrainSettings", "retrain"]
