"""``clearbg batch``: background removal over millions of photos, resumable after any crash.

Example:
    >>> from clearbg.batch import run_batch                       # doctest: +SKIP
    >>> from clearbg.inference.predictor import Predictor        # doctest: +SKIP
    >>> run_batch(["s3://shop/raw/"], "s3://shop/cut/", Predictor("u2netp"))  # doctest: +SKIP
"""

from clearbg.batch.journal import RESULTS_NAME, Journal
from clearbg.removal.record import RESULT_COLUMNS
from clearbg.batch.local import BatchSummary, output_for, run_batch

__all__ = ["RESULT_COLUMNS", "RESULTS_NAME", "BatchSummary", "Journal", "output_for", "run_batch"]
