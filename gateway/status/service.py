"""The status pages as one object the metrics server serves and stops: a worker reading the
registry over a connection of its own (so a slow page never holds a connection the rule
follower needs) and the site rendering from its readings."""

from __future__ import annotations

from gateway.metrics.http.messages import Response
from gateway.status.site import StatusSite
from gateway.status.worker import StatusWorker
from registry_client.client import RegistryClient

__all__ = ["StatusPages"]


class StatusPages:
    def __init__(self, redis_url: str, namespace: str, refresh_seconds: float) -> None:
        self.worker = StatusWorker(
            lambda: RegistryClient.from_url(redis_url, namespace), refresh_seconds
        )
        self._site = StatusSite(self.worker)

    def start(self) -> None:
        self.worker.start()

    def respond(self, path: str) -> Response:
        return self._site.respond(path)

    def stop(self) -> None:
        self.worker.stop()
