"""Serving visitors together: the requests that arrive while the model thread is busy run as one forward pass.

On a CPU one forward pass over 16 short inputs costs less than 16 passes over one (bigger matrix products, one trip
through the Python of the model; BERT base on 2 cores: 1.5-1.9x less per text), so under load each visitor waits
less. Gradio's own `batch=True` cannot fail one item of a batch alone, so the tabs use this instead: each request is
checked in its own handler thread first, then only its model input joins a batch; each caller gets its own result,
or its own exception. The batches run on the model thread (hub.model_thread), between other visitors' work.
"""

import threading
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from hub import model_thread

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_BATCH = 16  # the most requests one forward pass serves; the event's concurrency_limit lets this many in at once


class MicroBatcher(Generic[Item, Result]):
    """`batcher(item)` blocks until `run_batch([..., item, ...])` has run on the model thread, together with the
    other items waiting then (at most `max_size`), and returns this item's result. `run_batch` returns one result
    per item, in order. When a batch of several fails, each of its items is run again alone, so an error reaches
    only the caller whose item causes it.

    Requests that come while the model thread is busy (someone's batch, a step of a long job) wait in a queue, and
    the next batch takes every one of them. A request that finds it idle runs at once: it never waits for company.
    A wait of 5 ms for others to join cost a lone BERT request 14-16 ms (bfloat16: 38 -> 54 ms, the threads went
    idle meanwhile) and gained nothing under load, where the queue already holds the next batch."""

    def __init__(self, run_batch: Callable[[list[Item]], list[Result]], max_size: int = MAX_BATCH) -> None:
        self.run_batch, self.max_size = run_batch, max_size
        self.batch_sizes: Counter[int] = Counter()  # batch size -> how many batches of that size ran
        self._waiting: deque[tuple[Item, Future]] = deque()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        """How many items wait for the next batch."""
        return len(self._waiting)

    def __call__(self, item: Item) -> Result:
        done: Future = Future()
        if model_thread.is_model_thread():  # called from work already on the model thread: nobody can join it
            self._run([(item, done)])
            return done.result()
        with self._lock:
            self._waiting.append((item, done))
        # The first of these requests to run takes every item waiting then; the others find none.
        model_thread.submit(self._serve_one_batch)
        return done.result()

    def _serve_one_batch(self) -> None:
        with self._lock:
            batch = [self._waiting.popleft() for _ in range(min(self.max_size, len(self._waiting)))]
        if batch:
            self._run(batch)

    def _run(self, batch: list[tuple[Item, Future]]) -> None:
        self.batch_sizes[len(batch)] += 1
        try:
            results = self.run_batch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch gave {len(results)} results for {len(batch)} items")
        except Exception as error:
            if len(batch) == 1:
                batch[0][1].set_exception(error)
            else:  # which item failed is not known: each runs alone, and only the failing one's caller hears of it
                for one in batch:
                    self._run([one])
            return
        for (_, done), result in zip(batch, results):
            done.set_result(result)
