"""The quality gate's second half: photos the gate doubts wait in a durable review queue.

Example:
    >>> from clearbg.review import ReviewQueue                  # doctest: +SKIP
    >>> queue = ReviewQueue("review/queue.db")                  # doctest: +SKIP
    >>> item = queue.claim("ana")                               # doctest: +SKIP
"""

from clearbg.review.queue import DEFAULT_QUEUE, Effort, Item, QueueStats, ReviewQueue

__all__ = ["DEFAULT_QUEUE", "Effort", "Item", "QueueStats", "ReviewQueue"]
