"""grpc.health.v1.Health over our serving state, with watches that end when draining begins.

Two questions, as Kubernetes' gRPC probes ask them: readiness ("" and the inference service:
should this replica get traffic?) and liveness ("liveness": is the process with its loops
alive, or should it be restarted?). A replica that is loading, has lost Redis or is draining
is alive; only a dead loop makes liveness NOT_SERVING.

grpc_health's reference servicer keeps Watch streams open through a shutdown, so a server
draining with any watcher connected would wait out its whole grace period; this one closes
them once the drain has told them NOT_SERVING.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.errors import ServiceUnknown

__all__ = ["LIVENESS", "HealthService", "ServingState"]

LIVENESS = "liveness"

Status = int  # health_pb2.HealthCheckResponse.ServingStatus
SendResponse = Callable[[health_pb2.HealthCheckResponse | None], None]
SERVING: Status = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: Status = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: Status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # untyped upstream
    """Check and Watch for "" (the whole server) and each named service; thread-safe."""

    def __init__(self, services: Iterable[str], alive: Callable[[], bool] = lambda: True) -> None:
        self._alive = alive
        self._lock = threading.Lock()
        self._status: dict[str, Status] = {name: NOT_SERVING for name in ["", *services]}
        self._watchers: dict[str, set[SendResponse]] = {}
        self._closed = False

    def set_all(self, status: Status) -> None:
        """Give every service the status and tell the watchers."""
        with self._lock:
            for name in self._status:
                self._status[name] = status
            watchers = [(name, w) for name, ws in self._watchers.items() for w in ws
                        if name != LIVENESS]  # fmt: skip
        for name, watcher in watchers:
            watcher(health_pb2.HealthCheckResponse(status=self._status.get(name, status)))

    def close_watches(self) -> None:
        """End every Watch stream (after its last status) and every later one at once."""
        with self._lock:
            self._closed = True
            watchers = [w for ws in self._watchers.values() for w in ws]
            self._watchers.clear()
        for watcher in watchers:
            watcher(None)

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service == LIVENESS:
            return health_pb2.HealthCheckResponse(status=self._liveness())
        status = self._status.get(request.service)
        if status is None:
            raise ServiceUnknown(f"unknown service '{request.service}'")
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(  # grpc's non-blocking streaming form: responses go through the callback
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: SendResponse,
    ) -> None:
        service = request.service
        with self._lock:
            status = self._status.get(service, SERVICE_UNKNOWN)
            if service == LIVENESS:  # readiness changes are not sent to liveness watchers
                status = self._liveness()
            send_response_callback(health_pb2.HealthCheckResponse(status=status))
            if self._closed:
                send_response_callback(None)
                return
            self._watchers.setdefault(service, set()).add(send_response_callback)

        def forget() -> None:
            with self._lock:
                self._watchers.get(service, set()).discard(send_response_callback)

        context.add_callback(forget)

    def _liveness(self) -> Status:
        return SERVING if self._alive() else NOT_SERVING

    # A watcher holds no request thread: grpc calls Watch once and streams what we send.
    Watch.experimental_non_blocking = True  # type: ignore[attr-defined]


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
