"""Whether the gateway is ready, reflected in ServerReady and gRPC health."""

from __future__ import annotations

import threading

from gateway.api.health import NOT_SERVING, SERVING, HealthService

__all__ = ["ServingState"]


class ServingState:
    """NOT_SERVING until the models are loaded, SERVING then, NOT_SERVING for good once
    draining begins; thread-safe."""

    def __init__(self, health: HealthService) -> None:
        self._health = health
        self._ready = False
        self._draining = False
        self._reported = False
        self._lock = threading.Lock()

    def mark_ready(self, ready: bool) -> None:
        """Set readiness after a load; ignored once draining has begun."""
        with self._lock:
            if self._draining or (ready == self._ready and self._reported):
                return
            self._reported = True
            self._ready = ready
            self._health.set_all(SERVING if ready else NOT_SERVING)

    def mark_draining(self) -> None:
        """Report NOT_SERVING from now on so balancers stop sending new requests."""
        with self._lock:
            self._draining = True
            self._ready = False
            self._health.set_all(NOT_SERVING)

    def is_ready(self) -> bool:
        """True while SERVING."""
        return self._ready
