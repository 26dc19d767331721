"""Background writer of per-version request statistics: never on the request path."""

from __future__ import annotations

import logging
import threading

from prometheus_client import Counter

from gateway.request_stats import RequestStats
from registry_client.errors import RegistryError
from registry_client.stats_store import StatsStore

__all__ = ["StatsFlusher"]

_log = logging.getLogger(__name__)


class StatsFlusher:
    """Every `interval_seconds`, writes this replica's changed windows; stop() flushes once
    more so a draining gateway's last requests are counted."""

    def __init__(
        self,
        stats: RequestStats,
        store: StatsStore,
        replica: str,
        interval_seconds: float,
        ttl_seconds: int,
        failures: Counter,
    ) -> None:
        self._stats = stats
        self._store = store
        self._replica = replica
        self._interval = interval_seconds
        self._ttl = ttl_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="onnxgate-stats", daemon=True)
        self._failures = failures
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self.flush()

    def flush(self) -> bool:
        """Write what changed; True when it reached Redis (or nothing had changed)."""
        writes = self._stats.pending()
        if not writes:
            return True
        try:
            self._store.write(self._replica, writes, self._ttl)
        except RegistryError as exc:
            self._stats.failed(writes)
            self._failures.inc()
            if not self._failing:  # once per outage, not every interval
                _log.warning("statistics not written; will retry", extra={"reason": str(exc)})
            self._failing = True
            return False
        if self._failing:
            _log.info("statistics written again")
        self._failing = False
        return True
