"""Background writer of windowed state (request statistics, drift sketches): never on the
request path."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

import redis
from prometheus_client import Counter

from gateway.telemetry.periodic import Periodic
from registry_client.errors import RegistryError

__all__ = ["PendingWindows", "WindowFlusher"]

_log = logging.getLogger(__name__)
W = TypeVar("W")


class PendingWindows(Protocol[W]):
    """In-memory windows that know which of them changed since they were last written."""

    def pending(self) -> list[W]: ...

    def failed(self, writes: Iterable[W]) -> None: ...


class WindowFlusher(Generic[W]):
    """Every `interval_seconds`, writes what changed; stop() flushes once more so a draining
    gateway's last requests are counted. A failed write is retried at the next interval."""

    def __init__(
        self,
        what: str,
        source: PendingWindows[W],
        write: Callable[[list[W]], None],
        interval_seconds: float,
        failures: Counter,
    ) -> None:
        self._what = what
        self._source = source
        self._write = write
        self._failures = failures
        self._periodic = Periodic(what, interval_seconds, self.flush)
        self._failing = False
        # One flush at a time: a flush() called while the periodic one writes could otherwise
        # land an older window's write after a newer one.
        self._lock = threading.Lock()

    def start(self) -> None:
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()
        self.flush()

    def flush(self) -> bool:
        """Write what changed; True when it reached Redis (or nothing had changed)."""
        with self._lock:
            return self._flush()

    def _flush(self) -> bool:
        writes = self._source.pending()
        if not writes:
            return True
        try:
            self._write(writes)
        except (RegistryError, redis.RedisError) as exc:  # unreachable, or refused (ACL, OOM)
            self._source.failed(writes)
            self._failures.labels(self._what).inc()
            if not self._failing:  # once per outage, not every interval
                _log.warning(f"{self._what} not written; will retry", extra={"reason": str(exc)})
            self._failing = True
            return False
        if self._failing:
            _log.info(f"{self._what} written again")
        self._failing = False
        return True
