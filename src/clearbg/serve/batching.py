"""Micro-batching: requests that arrive within a few milliseconds share one model call.

Each request hands its decoded photo to ``MicroBatcher.predict`` and awaits the result. One
collector task takes the first waiting photo, then keeps collecting until ``max_batch`` photos
or ``max_wait_ms`` have passed, and runs the batch in one worker thread (``Predictor`` spreads
a batch over the cores itself). While a batch runs, new photos queue up, so under load batches
fill without any waiting, and a lone request pays at most ``max_wait_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image

PredictFn = Callable[[Sequence[Image.Image]], list[np.ndarray]]


@dataclass
class BatchStats:
    """Counters since start: model calls, photos predicted, and the largest batch seen."""

    batches: int = 0
    images: int = 0
    largest: int = 0


class MicroBatcher:
    """Collect concurrent photos into batches for one ``predict`` function.

    Args:
        predict: photos in, probability maps out, in order (``Predictor.predict``).
        max_batch: most photos per call.
        max_wait_ms: how long the first photo of a batch waits for company.

    Example:
        >>> batcher = MicroBatcher(Predictor("u2netp").predict)   # doctest: +SKIP
        >>> await batcher.start()                                # doctest: +SKIP
        >>> prob, batch_size = await batcher.predict(image)      # doctest: +SKIP
    """

    def __init__(self, predict: PredictFn, *, max_batch: int = 8, max_wait_ms: float = 5.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[Image.Image, asyncio.Future]] = asyncio.Queue()
        # One batch at a time: the predictor already uses every core for one batch.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="clearbg-batch")
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Start the collector on the running event loop."""
        self._task = asyncio.create_task(self._collect_forever(), name="clearbg-batcher")

    async def stop(self) -> None:
        """Stop collecting; photos still queued get a ``CancelledError``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            future.cancel()
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def predict(self, image: Image.Image) -> tuple[np.ndarray, int]:
        """The probability map of ``image`` and the size of the batch it ran in.

        Raises:
            Whatever ``predict`` raised for the batch.
        """
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((image, future))
        return await future

    async def _collect_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
            # A request that timed out while queued needs no prediction.
            batch = [(image, future) for image, future in batch if not future.done()]
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[tuple[Image.Image, asyncio.Future]]) -> None:
        images = [image for image, _ in batch]
        try:
            probs = await asyncio.get_running_loop().run_in_executor(self._worker, self._predict, images)
        except Exception as err:  # the batch's callers see the error; the collector goes on
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        self.stats.batches += 1
        self.stats.images += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        for (_, future), prob in zip(batch, probs):
            if not future.done():
                future.set_result((prob, len(batch)))
