"""The prediction log's writer: every interval, what the recorder holds ready is written to the
registry, model by model; what could not be written is held again and retried."""

from __future__ import annotations

import logging
import threading

import redis

from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.quality.recorder import PredictionRecorder, PredictionWrite
from gateway.telemetry.periodic import Periodic
from registry_client.errors import RegistryError
from registry_client.quality.prediction_store import PredictionStore

__all__ = ["PredictionLogWriter"]

_log = logging.getLogger(__name__)


class PredictionLogWriter:
    """Writes on its own thread; stop() writes once more, holding nothing back, so a draining
    gateway's last predictions are logged."""

    def __init__(
        self, recorder: PredictionRecorder, store: PredictionStore, metrics: GatewayMetrics,
        ttl_seconds: int, interval_seconds: float,
    ) -> None:  # fmt: skip
        self._recorder = recorder
        self._store = store
        self._metrics = metrics
        self._ttl = ttl_seconds
        self._periodic = Periodic("prediction-log", interval_seconds, self.flush)
        self._lock = threading.Lock()  # one flush at a time
        self._failing = False

    def start(self) -> None:
        self._periodic.start()

    def caught_up(self) -> bool:
        """Whether the last write reached Redis: nothing is held back by an outage."""
        return not self._failing

    def stop(self) -> None:
        self._periodic.stop()
        self._recorder.release_held()
        self.flush()

    def flush(self) -> bool:
        """Write what is ready; True when all of it reached Redis."""
        with self._lock:
            writes = self._recorder.pending()
            for index, write in enumerate(writes):
                try:
                    self._store.write(write.model, write.entries, self._ttl)
                except (RegistryError, redis.RedisError) as exc:  # unreachable or refused
                    self._failed(writes[index:], exc)
                    return False
                self._metrics.predictions_logged.labels(write.model).inc(_records(write))
            if self._failing:
                _log.info("prediction log written again")
            self._failing = False
            return True

    def _failed(self, writes: list[PredictionWrite], exc: Exception) -> None:
        self._recorder.failed(writes)
        self._metrics.flush_failures.labels("predictions").inc()
        if not self._failing:  # once per outage
            _log.warning("prediction log not written; will retry", extra={"reason": str(exc)})
        self._failing = True


def _records(write: PredictionWrite) -> int:
    return sum(len(records) for _, records in write.entries)
