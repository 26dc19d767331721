"""This replica's heartbeat: what it serves and what it is working towards, on its own thread.

The heartbeat never waits for the rule follower or a load: it reads their published state,
so a replica stays visible in `gatectl route status` (with each version LOADING, READY or
FAILED) whatever they are doing. A change of state is written at once, not at the next beat.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping

import redis

from gateway.models.store import VersionState, VersionStore
from gateway.routing.table import RouteTableHolder
from registry_client.client import RegistryClient
from registry_client.errors import RegistryError

__all__ = ["FollowerState", "Heartbeat"]

_log = logging.getLogger(__name__)


class FollowerState:
    """What the rule follower publishes for the heartbeat: replaced whole, read lock-free."""

    def __init__(self) -> None:
        self.targets: Mapping[str, int] = {}  # model -> revision being loaded, not yet applied
        self.errors: Mapping[str, str] = {}  # model -> why its newest rule is not applied


class Heartbeat:
    """Writes `{ns}:gateway:<replica>` every `interval_seconds` and on beat_now()."""

    def __init__(
        self,
        registry: RegistryClient,
        replica: str,
        versions: VersionStore,
        routes: RouteTableHolder,
        follower: FollowerState,
        interval_seconds: float,
    ) -> None:
        self._registry = registry
        self._replica = replica
        self._versions = versions
        self._routes = routes
        self._follower = follower
        self._interval = interval_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="onnxgate-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def beat_now(self) -> None:
        """Write soon, not at the next interval (something operators watch has changed)."""
        self._wake.set()

    def fields(self) -> dict[str, str]:
        """The heartbeat's hash fields (JSON values), as `gatectl route status` reads them."""
        statuses = self._versions.statuses()
        now = time.time()
        return {
            "applied": json.dumps(
                {m: r.revision for m, r in self._routes.current().routes.items()}
            ),
            "targets": json.dumps(dict(self._follower.targets)),
            "versions": json.dumps([f"{s.model}:{s.version}:{s.state.name}" for s in statuses]),
            "loading": json.dumps(
                {
                    f"{s.model}:{s.version}": round(now - s.loading_since, 1)
                    for s in statuses
                    if s.loading_since is not None and s.state is VersionState.LOADING
                }
            ),
            "memory": json.dumps(
                {
                    f"{s.model}:{s.version}": s.memory_bytes
                    for s in statuses
                    if s.memory_bytes is not None
                }
            ),
            "failed": json.dumps(
                {
                    f"{s.model}:{s.version}": s.reason
                    for s in statuses
                    if s.state is VersionState.FAILED
                }
            ),
            "errors": json.dumps(dict(self._follower.errors)),
            "updated_at": str(now),
        }

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._registry.heartbeat(self._replica, self.fields(),
                                         ttl_seconds=max(3, int(self._interval * 3)))  # fmt: skip
            except (RegistryError, redis.RedisError) as exc:
                _log.debug("heartbeat not written", extra={"detail": str(exc)})
            self._wake.wait(self._interval)
