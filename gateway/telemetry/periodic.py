"""A background thread that runs one function every interval until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Periodic"]

_log = logging.getLogger(__name__)


class Periodic:
    """Runs `work` every `interval_seconds` on its own thread; an exception is logged and the
    next interval runs anyway. stop() waits for the current run."""

    def __init__(self, name: str, interval_seconds: float, work: Callable[[], object]) -> None:
        self._interval = interval_seconds
        self._work = work
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"onnxgate-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self._work()
            except Exception:  # a background task must outlive one bad run
                _log.exception("background task failed", extra={"task": self._thread.name})
