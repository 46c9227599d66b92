"""The quality gate's second half: photos the gate doubts wait in a durable review queue.

Example:
    >>> from clearbg.review import ReviewQueue                  # doctest: +SKIP
    >>> queue = ReviewQueue("review/queue.db")                  # doctest: +SKIP
    >>> item = queue.claim("ana")                               # doctest: +SKIP
"""

from __future__ import annotations

import importlib

DEFAULT_QUEUE = "review/queue.db"

__all__ = ["DEFAULT_QUEUE", "Effort", "Item", "QueueStats", "ReviewQueue"]


def __getattr__(name: str):
    # The queue (SQLAlchemy, 0.1 s) loads when used: `clearbg remove` without review needs only the default.
    if name in __all__:
        return getattr(importlib.import_module("clearbg.review.queue"), name)
    raise AttributeError(f"module 'clearbg.review' has no attribute {name!r}")
