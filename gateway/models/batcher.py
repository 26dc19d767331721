"""Dynamic batching of one version: concurrent requests with the same non-batch shapes become
one session.run, their outputs split back by rows.

A worker thread takes the oldest request and every queued request it can be batched with, up
to `max_rows`. It waits up to `max_delay` for more only when other requests are already
queued (concurrency is present): a request alone is never delayed. Requests whose deadline
passes while queued are answered DEADLINE_EXCEEDED without running; a run still going when
the latest deadline of its batch has passed is stopped (no caller still waits for it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from onnxruntime import RunOptions

from gateway.errors import DeadlineExceeded
from gateway.models.run_deadlines import RunDeadlines
from gateway.models.version import Session

__all__ = ["DynamicBatcher"]

_EXPIRED = "deadline passed while the request was queued for a batch; the model did not run it"
_STOPPED = "deadline passed while the model ran the request's batch; the run was stopped"
_Key = tuple[tuple[str, ...], tuple[tuple[str, str, tuple[int, ...]], ...]]


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(slots=True)
class _Pending:
    key: _Key
    output_names: Sequence[str]
    feeds: dict[str, np.ndarray]
    rows: int
    deadline: float | None
    enqueued: float
    # Released when answered: a bare lock is the cheapest wait CPython has (an Event is a
    # Condition in Python code), and every request of a batch waits on one.
    done: threading.Lock = field(default_factory=_held_lock)
    result: list[np.ndarray] | None = None
    error: BaseException | None = None


def _key(output_names: Sequence[str], feeds: dict[str, np.ndarray]) -> _Key:
    inputs = tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in feeds.items()))
    return (tuple(output_names), inputs)


class DynamicBatcher:
    """Thread-safe. run() blocks its caller (a request thread) until its rows are answered."""

    def __init__(
        self,
        session: Session,
        name: str,
        max_rows: int,
        max_delay: float,
        observe: Callable[[int, float, float], None],
        deadlines: RunDeadlines | None = None,
        on_terminated: Callable[[], None] = lambda: None,
    ) -> None:
        self._session = session
        self._deadlines = deadlines
        self._on_terminated = on_terminated
        self._max_rows = max_rows
        self._max_delay = max_delay
        # (rows in the run, seconds its oldest request queued, seconds session.run took)
        self._observe = observe
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        # Rows of the batch the worker is filling while it waits out the delay, else -1: a
        # new request wakes it only when that would fill the batch, not once per request.
        self._filling_rows = -1
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name=f"onnxgate-batch-{name}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def run(
        self, output_names: Sequence[str], feeds: dict[str, np.ndarray], deadline: float | None
    ) -> list[np.ndarray]:
        rows = next(iter(feeds.values())).shape[0] if feeds else 0
        pending = _Pending(_key(output_names, feeds), output_names, feeds, rows, deadline,
                           time.monotonic())  # fmt: skip
        with self._cond:
            if self._stopping:  # unloaded while this request was on its way: serve it alone
                return self._session.run(output_names, feeds)
            self._queue.append(pending)
            self._queued_rows += rows
            filling = self._filling_rows
            if filling < 0 or filling + self._queued_rows >= self._max_rows:
                self._cond.notify()
        pending.done.acquire()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def stop(self) -> None:
        """Answer what is queued, then end the worker; later run() calls run inline."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            if batch:
                self._run(batch)

    def _next_batch(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            batch = [self._queue.popleft()]
            self._queued_rows -= batch[0].rows
            rows = self._take_compatible(batch, batch[0].rows)
            if self._max_delay > 0 and rows < self._max_rows and (len(batch) > 1 or self._queue):
                until = time.monotonic() + self._max_delay
                while rows < self._max_rows and (left := until - time.monotonic()) > 0:
                    self._filling_rows = rows
                    self._cond.wait(left)
                    rows = self._take_compatible(batch, rows)
                self._filling_rows = -1
        now = time.monotonic()
        live = []
        for pending in batch:
            if pending.deadline is not None and now >= pending.deadline:
                pending.error = DeadlineExceeded(_EXPIRED)
                pending.done.release()
            else:
                live.append(pending)
        return live

    def _take_compatible(self, batch: list[_Pending], rows: int) -> int:
        """Move queued requests batchable with batch[0] into it, oldest first, up to max_rows;
        returns the batch's rows. Called with the condition held."""
        key = batch[0].key
        kept: deque[_Pending] = deque()
        while self._queue:
            pending = self._queue.popleft()
            if pending.key == key and rows + pending.rows <= self._max_rows:
                batch.append(pending)
                rows += pending.rows
                self._queued_rows -= pending.rows
            else:
                kept.append(pending)
        self._queue = kept
        return rows

    def _run(self, batch: list[_Pending]) -> None:
        first = batch[0]
        started = time.monotonic()
        deadlines = [p.deadline for p in batch]
        watch = None
        if self._deadlines is not None and None not in deadlines:
            watch = self._deadlines.watch(max(d for d in deadlines if d is not None))
        options = watch and watch.options
        try:
            if len(batch) == 1:
                first.result = self._session.run(first.output_names, first.feeds, options)
            else:
                self._run_together(batch, options)
        except Exception as exc:  # every caller in the batch gets the model's error
            error: BaseException = exc
            if watch is not None and watch.done():
                self._on_terminated()
                error = DeadlineExceeded(_STOPPED)
            for pending in batch:
                pending.error = error
        finally:
            if watch is not None:
                watch.done()
            for pending in batch:
                pending.done.release()
        rows = sum(p.rows for p in batch)
        self._observe(rows, started - first.enqueued, time.monotonic() - started)

    def _run_together(self, batch: list[_Pending], options: RunOptions | None) -> None:
        first = batch[0]
        feeds = {name: np.concatenate([p.feeds[name] for p in batch]) for name in first.feeds}
        outputs = self._session.run(first.output_names, feeds, options)
        offsets = np.cumsum([p.rows for p in batch])[:-1]
        total = int(offsets[-1]) + batch[-1].rows
        for output in outputs:
            if output.shape[:1] != (total,):
                raise RuntimeError(f"output of shape {output.shape} does not have the batch's"
                                   f" {total} rows")  # fmt: skip
        parts = [np.split(output, offsets) for output in outputs]
        for i, pending in enumerate(batch):
            pending.result = [part[i] for part in parts]
