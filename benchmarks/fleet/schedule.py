"""The simulator's clock: every simulated gateway's periodic tasks on one heap, run on a small
thread pool, with what each kind of task achieved against its schedule.

A gateway runs each task on a thread of its own; hundreds of gateways in one process cannot,
so a dispatcher thread hands each task to the pool when it is due. A task is never run twice
at once: its next run is scheduled when it ends (`period` after the previous due time, or at
once when it has fallen behind, so a slow simulator shows as fewer runs than intended, not as
a burst). Lateness (start minus due time) says how far the simulator fell behind.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

__all__ = ["KindCounters", "Scheduler"]


@dataclass(slots=True)
class KindCounters:
    """Runs of one kind of task since the simulator started."""

    runs: int = 0
    errors: int = 0
    busy_seconds: float = 0.0
    cpu_seconds: float = 0.0  # the simulator's own CPU in the task (its thread's time)
    lateness: list[float] = field(default_factory=list)  # seconds, one per run


@dataclass(slots=True)
class _Entry:
    kind: str
    period: float
    work: Callable[[], object]


class Scheduler:
    """Periodic work of many simulated gateways on `threads` pool threads."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fleet-task")
        self._heap: list[tuple[float, int, _Entry]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._stopping = False
        self._counters: dict[str, KindCounters] = {}
        self._errors: list[str] = []  # the first few failures, for the report
        self._thread = threading.Thread(target=self._dispatch, name="fleet-dispatch", daemon=True)

    def every(self, kind: str, period: float, work: Callable[[], object], first: float) -> None:
        """Run `work` every `period` s from monotonic time `first`."""
        self._counters.setdefault(kind, KindCounters())
        with self._ready:
            heapq.heappush(self._heap, (first, next(self._order), _Entry(kind, period, work)))
            self._ready.notify()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self._thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def counters(self) -> dict[str, KindCounters]:
        """A copy of every kind's counters (lateness lists copied too)."""
        with self._ready:
            return {
                kind: KindCounters(
                    c.runs, c.errors, c.busy_seconds, c.cpu_seconds, list(c.lateness)
                )
                for kind, c in self._counters.items()
            }

    def errors(self) -> list[str]:
        with self._ready:
            return list(self._errors)

    def _dispatch(self) -> None:
        with self._ready:
            while not self._stopping:
                if not self._heap:
                    self._ready.wait()
                    continue
                due = self._heap[0][0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._ready.wait(wait)
                    continue
                _, _, entry = heapq.heappop(self._heap)
                self._pool.submit(self._run, entry, due)

    def _run(self, entry: _Entry, due: float) -> None:
        started, cpu = time.monotonic(), time.thread_time()
        failed = ""
        try:
            entry.work()
        except Exception as exc:  # as Periodic does: a task outlives one bad run, counted
            failed = f"{entry.kind}: {type(exc).__name__}: {exc}"
        ended, cpu = time.monotonic(), time.thread_time() - cpu
        following = max(due + entry.period, ended)
        with self._ready:
            counters = self._counters[entry.kind]
            counters.runs += 1
            counters.busy_seconds += ended - started
            counters.cpu_seconds += cpu
            counters.lateness.append(started - due)
            if failed:
                counters.errors += 1
                if len(self._errors) < 5:
                    self._errors.append(failed)
            if not self._stopping:
                heapq.heappush(self._heap, (following, next(self._order), entry))
                self._ready.notify()
