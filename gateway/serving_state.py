"""Whether the gateway is ready, reflected in ServerReady and gRPC health."""

from __future__ import annotations

import threading

from grpc_health.v1 import health, health_pb2

__all__ = ["ServingState"]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServingState:
    """NOT_SERVING until the models are loaded, SERVING then, NOT_SERVING for good once
    draining begins; thread-safe."""

    def __init__(self, health_servicer: health.HealthServicer, services: list[str]) -> None:
        self._health = health_servicer
        self._services = ["", *services]
        self._ready = False
        self._draining = False
        self._lock = threading.Lock()
        for service in self._services:
            self._health.set(service, NOT_SERVING)

    def mark_ready(self, ready: bool) -> None:
        """Set readiness after a load; ignored once draining has begun."""
        with self._lock:
            if self._draining:
                return
            self._ready = ready
            for service in self._services:
                self._health.set(service, SERVING if ready else NOT_SERVING)

    def mark_draining(self) -> None:
        """Report NOT_SERVING from now on so balancers stop sending new requests."""
        with self._lock:
            self._draining = True
            self._ready = False
            self._health.enter_graceful_shutdown()

    def is_ready(self) -> bool:
        """True while SERVING."""
        return self._ready
