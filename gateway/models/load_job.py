"""One version's load, bounded in time and cancellable, on threads of its own.

A load has a budget (`--load-timeout-seconds`) for everything it does: fetching the artifact,
the memory probe, creating the session and warming it up. Each step that can be stopped is
stopped at the deadline: the probe's child is killed, the warm-up's run is terminated through
its RunOptions. A step that cannot be stopped (onnxruntime creating a session, a read that
hangs) is abandoned: the load is reported FAILED at the deadline and its thread, a daemon, is
left to finish or not, holding nothing the gateway waits for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LoadFailed", "LoadJob", "LoadOutcome"]

_log = logging.getLogger(__name__)

# How long past its deadline a load may take to stop by itself (a terminated warm-up returns
# within a kernel's time, a killed probe at once) before it is abandoned.
STOP_GRACE_SECONDS = 1.0
_POLL_SECONDS = 0.05


class LoadFailed(Exception):
    """A load that did not produce a version; `kind` labels the failure metric."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind  # artifact, memory, timeout or rejected


@dataclass(frozen=True, slots=True)
class LoadOutcome:
    """What a finished load left: the result, or why there is none."""

    result: object | None
    failure: LoadFailed | None
    cancelled: bool


class LoadJob:
    """The state one load shares between its worker thread and whoever supervises it."""

    def __init__(self, name: str, timeout_seconds: float) -> None:
        self.name = name
        self.timeout_seconds = timeout_seconds
        self.deadline = float("inf")  # the budget starts with run()
        self.stage = "waiting for a load slot"
        self.cancelled = threading.Event()
        self._on_cancel: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def begin(self, stage: str) -> None:
        """Name the step now running (it appears in a timeout's reason); raises LoadFailed
        when the job was cancelled or its budget is spent, so no new step starts then."""
        if self.cancelled.is_set():
            raise LoadFailed("load cancelled", "cancelled")
        if time.monotonic() >= self.deadline:
            raise self.timed_out()
        self.stage = stage

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def on_cancel(self, action: Callable[[], None]) -> None:
        """Run `action` when the job is cancelled (at once if it already is)."""
        with self._lock:
            if not self.cancelled.is_set():
                self._on_cancel.append(action)
                return
        action()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled.set()
            actions, self._on_cancel = self._on_cancel, []
        for action in actions:
            action()

    def timed_out(self) -> LoadFailed:
        return LoadFailed(
            f"{self.stage} did not finish within the load timeout of {self.timeout_seconds:g} s"
            " (--load-timeout-seconds); not loaded",
            "timeout",
        )

    def run(self, work: Callable[[LoadJob], object]) -> LoadOutcome:
        """Run `work(self)` on a daemon thread and wait for it until the deadline (plus a
        short grace for a step that was told to stop), or until the job is cancelled."""
        self.deadline = time.monotonic() + self.timeout_seconds
        box: list[object] = []
        errors: list[BaseException] = []
        finished = threading.Event()

        def worker() -> None:
            try:
                box.append(work(self))
            except BaseException as exc:  # handed to the supervising thread
                errors.append(exc)
            finally:
                finished.set()

        threading.Thread(target=worker, name=f"onnxgate-load-{self.name}", daemon=True).start()
        while not finished.wait(_POLL_SECONDS):
            if self.cancelled.is_set():
                # A cancelled load stops its probe and warm-up; nothing waits for the rest.
                return LoadOutcome(None, None, cancelled=True)
            if time.monotonic() > self.deadline + STOP_GRACE_SECONDS:
                _log.error("load abandoned: a step that cannot be stopped is still running",
                           extra={"load": self.name, "stage": self.stage})  # fmt: skip
                self.cancel()  # whatever it still reaches for is refused
                return LoadOutcome(None, self.timed_out(), cancelled=False)
        if self.cancelled.is_set():
            return LoadOutcome(None, None, cancelled=True)
        if errors:
            error = errors[0]
            if not isinstance(error, LoadFailed):  # a defect of ours: FAILED, not LOADING forever
                _log.error("load failed unexpectedly", exc_info=error, extra={"load": self.name})
                error = LoadFailed(f"load failed unexpectedly: {error!r}", "rejected")
            return LoadOutcome(None, error, cancelled=False)
        return LoadOutcome(box[0], None, cancelled=False)
