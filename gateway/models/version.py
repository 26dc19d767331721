"""One loaded, warmed model version: its session, binder and admission limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnxruntime as ort

from gateway.errors import DeadlineExceeded, ModelFailed, Overloaded
from gateway.metrics.versions import VersionMetrics
from gateway.models.binding import Binder
from gateway.models.ort_errors import ORT_ERRORS
from gateway.models.run_deadlines import RunDeadlines
from gateway.models.signature import Signature

__all__ = ["Batcher", "LoadedVersion", "Session", "VersionInfo"]


class Batcher(Protocol):
    """Runs requests of one version together (gateway/models/batcher.py)."""

    def run(
        self, output_names: Sequence[str], feeds: dict[str, np.ndarray], deadline: float | None
    ) -> list[np.ndarray]: ...

    def stop(self) -> None: ...


class Session(Protocol):
    """What the gateway needs of an onnxruntime InferenceSession (run releases the GIL)."""

    def run(
        self,
        output_names: Sequence[str] | None,
        feeds: dict[str, np.ndarray],
        run_options: ort.RunOptions | None = None,
    ) -> list[np.ndarray]: ...


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """Where a version came from, for metadata and the repository index."""

    model: str
    version: str
    path: str
    sha256: str
    load_seconds: float
    memory_bytes: int | None = None  # peak the memory probe measured; None: not probed


class _Admission:
    """Counts requests in flight against a limit; a lock and an int, cheaper than a
    BoundedSemaphore (which is Python code around a Condition)."""

    __slots__ = ("_active", "_limit", "_lock")

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._limit = limit

    def try_enter(self) -> bool:
        with self._lock:
            if self._active >= self._limit:
                return False
            self._active += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._active -= 1

    @property
    def active(self) -> int:
        return self._active


class LoadedVersion:
    """A READY version. Thread-safe: many request threads call run() at once."""

    def __init__(
        self,
        info: VersionInfo,
        session: Session,
        signature: Signature,
        binder: Binder,
        max_inflight: int,
        metrics: VersionMetrics,
        batcher: Batcher | None = None,
        max_concurrency: int = 0,
        deadlines: RunDeadlines | None = None,
    ) -> None:
        """`max_inflight` admits requests (running and waiting); with `max_concurrency` > 0
        at most that many run at once and the others wait in turn, each until its deadline.
        A batcher has a queue of its own, so it is not combined with a concurrency limit.
        With `deadlines`, a run still going when its deadline passes is terminated."""
        self.info = info
        self.model = info.model
        self.version = info.version
        self.signature = signature
        self.binder = binder
        self.metrics = metrics
        self._session = session
        self._admission = _Admission(max_inflight)
        self._batcher = batcher
        self._deadlines = deadlines
        limited = max_concurrency > 0 and batcher is None
        self._runs = threading.Semaphore(max_concurrency) if limited else None

    def close(self) -> None:
        """Unloaded: a batcher answers what it holds, then stops."""
        if self._batcher is not None:
            self._batcher.stop()

    @property
    def inflight(self) -> int:
        """Requests of this version being served now (for the inflight gauge)."""
        return self._admission.active

    def admit(
        self, deadline: float | None, wait: bool = True,
        hold: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:  # fmt: skip
        """Enter the version: Overloaded at once when its admission limit is reached; with a
        concurrency limit, wait for a turn to run until the deadline (DeadlineExceeded), or
        not at all without `wait` (Overloaded), in `hold()` (CallThreads.holding: the wait
        holds a thread, not the pool's). Pair with release()."""
        if not self._admission.try_enter():  # fail fast, never queue behind the limit
            raise Overloaded(
                f"model '{self.model}' version '{self.version}' has reached its limit of"
                " requests in flight; retry later or on another replica"
            )
        runs = self._runs
        if runs is None or runs.acquire(blocking=False):
            return
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if wait:
            with hold():
                acquired = runs.acquire(timeout=timeout)
            if acquired:
                return
        self._admission.leave()
        if not wait:
            raise Overloaded(
                f"model '{self.model}' version '{self.version}' is running its limit of"
                " requests at once"
            )
        raise DeadlineExceeded(
            f"deadline passed while the request waited in the queue of model '{self.model}'"
            f" version '{self.version}'; the model did not run it"
        )

    def release(self) -> None:
        """Leave the version entered with admit()."""
        if self._runs is not None:
            self._runs.release()
        self._admission.leave()

    def run(
        self,
        output_names: Sequence[str],
        feeds: dict[str, np.ndarray],
        deadline: float | None,
        metrics: VersionMetrics | None = None,
        hold: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> list[np.ndarray]:
        """Run the model for an admitted request, unless its deadline has passed; arguments in
        onnxruntime's order. `metrics` replaces the version's own (see run_as_shadow); a
        batched request waits for its batch in `hold()` (see admit)."""
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded(
                f"deadline passed before model '{self.model}' version '{self.version}' ran"
            )
        metrics = metrics or self.metrics
        watch = None
        try:
            if self._batcher is not None:  # it times, bounds and counts the runs it makes
                with hold():
                    return self._batcher.run(output_names, feeds, deadline)
            if deadline is not None and self._deadlines is not None:
                watch = self._deadlines.watch(deadline)
            started = time.perf_counter()
            # ORT releases the GIL here; a watched run stops once its deadline passes.
            results = self._session.run(output_names, feeds, watch and watch.options)
        except ORT_ERRORS as exc:
            if watch is not None and watch.done():
                metrics.terminated.inc()
                raise DeadlineExceeded(
                    f"model '{self.model}' version '{self.version}' was still running when the"
                    " deadline passed; the run was stopped"
                ) from None
            raise ModelFailed(
                f"model '{self.model}' version '{self.version}' failed to run the request"
            ) from exc
        if watch is not None:
            watch.done()
        metrics.inference.observe(time.perf_counter() - started)
        return results

    def run_as_shadow(
        self,
        output_names: Sequence[str],
        feeds: dict[str, np.ndarray],
        deadline: float | None,
        metrics: VersionMetrics,
    ) -> list[np.ndarray]:
        """Run a mirrored copy: admit() without waiting (a shadow never queues behind the
        version's own requests: Overloaded instead), run() timed under `metrics` (the
        version's role="shadow" ones), release()."""
        self.admit(deadline, wait=False)
        try:
            return self.run(output_names, feeds, deadline, metrics)
        finally:
            self.release()
