"""This replica's heartbeat: what it serves and what it is working towards, on its own thread.

The heartbeat never waits for the rule follower or a load: it reads their published state,
so a replica stays visible in `gatectl route status` (with each version LOADING, READY or
FAILED) whatever they are doing. A change of state is written at once, not at the next beat.

Each heartbeat carries its writer's `instance`, a token drawn once per gateway, so a hash of
this replica id written by another process is told from this one's own: at start it refuses
or waits for the id (replica_identity.py); while running, a beat that replaces another
instance's is a replica id conflict, logged as an error and exported (conflicting()) rather
than fought over in silence. A gateway stopping removes its heartbeat: its id is free at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping

import redis

from gateway.models.store import VersionState, VersionStore
from gateway.routing.table import RouteTableHolder
from registry_client.client import RegistryClient
from registry_client.errors import RegistryError

__all__ = ["FollowerState", "Heartbeat", "beat_interval_seconds", "heartbeat_ttl_seconds"]

_log = logging.getLogger(__name__)
# What a beat reads of the hash it replaces: whose it was (instance) and how to name that writer.
_WRITER_FIELDS = ("instance", "interval", "host", "pid")


def heartbeat_ttl_seconds(interval_seconds: float) -> int:
    """How long a heartbeat written every `interval_seconds` outlives its writer."""
    return max(3, int(interval_seconds * 3))


def beat_interval_seconds(fields: Mapping[str, str], default: float) -> float:
    """The interval a heartbeat's writer beats at (its `interval` field), else `default`."""
    try:
        interval = float(fields.get("interval", ""))
    except ValueError:
        return default
    return interval if 0 < interval < math.inf else default  # NaN compares False too


class FollowerState:
    """What the rule follower publishes for the heartbeat: replaced whole, read lock-free."""

    def __init__(self) -> None:
        self.targets: Mapping[str, int] = {}  # model -> revision being loaded, not yet applied
        self.rejected: Mapping[str, int] = {}  # model -> revision given up on (a version failed)
        self.errors: Mapping[str, str] = {}  # model -> why its newest rule is not applied

    def publish(
        self, targets: Mapping[str, int], rejected: Mapping[str, int], errors: Mapping[str, str]
    ) -> bool:
        """Replace what the heartbeat shows; True when that changed."""
        if (targets, rejected, errors) == (self.targets, self.rejected, self.errors):
            return False
        self.targets, self.rejected, self.errors = targets, rejected, errors
        return True


class Heartbeat:
    """Writes `{ns}:gateway:<replica>` every `interval_seconds` and on beat_now(); `instance`
    is this gateway's token in it (drawn here unless given)."""

    def __init__(
        self,
        registry: RegistryClient,
        replica: str,
        versions: VersionStore,
        routes: RouteTableHolder,
        follower: FollowerState,
        interval_seconds: float,
        instance: str | None = None,
    ) -> None:
        self._registry = registry
        self.replica = replica
        self.instance = instance or uuid.uuid4().hex
        self._versions = versions
        self._routes = routes
        self._follower = follower
        self.interval_seconds = interval_seconds
        self.ttl_seconds = heartbeat_ttl_seconds(interval_seconds)
        self._conflict_until = 0.0  # monotonic; another instance's beat was replaced lately
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

    def conflicting(self) -> bool:
        """True while another gateway writes this replica id's heartbeat too: a beat of this
        one replaced one of theirs within the last heartbeat TTL (theirs or ours, the longer)."""
        return time.monotonic() < self._conflict_until

    def fields(self) -> dict[str, str]:
        """The heartbeat's hash fields (JSON values), as `gatectl route status` reads them."""
        statuses = self._versions.statuses()
        now = time.time()
        return {
            "applied": json.dumps(
                {m: r.revision for m, r in self._routes.current().routes.items()}
            ),
            "targets": json.dumps(dict(self._follower.targets)),
            "rejected": json.dumps(dict(self._follower.rejected)),
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
            "instance": self.instance,
            "interval": str(self.interval_seconds),
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
        }

    def beat(self, taking_over: str | None = None) -> None:
        """Write the heartbeat once, on the caller's thread; RegistryError (or a RedisError)
        when Redis does not take it. Notes a conflict when it replaced another instance's,
        unless that is `taking_over` (a dead gateway's, whose id the claim at start takes)."""
        replaced = self._registry.heartbeat(self.replica, self.fields(), self.ttl_seconds,
                                            previous=_WRITER_FIELDS)  # fmt: skip
        now = time.monotonic()
        other = replaced.get("instance")
        if other is not None and other not in (self.instance, taking_over):
            if not self.conflicting():
                _log.error(
                    "replica id in use by another gateway as well: each overwrites the other's"
                    " heartbeat, so gatectl route status shows one of them; stop one, or give"
                    " it another --replica-id",
                    extra={"replica": self.replica, "other_host": replaced.get("host", "?"),
                           "other_pid": replaced.get("pid", "?"), "other_instance": other},
                )  # fmt: skip
            theirs = heartbeat_ttl_seconds(beat_interval_seconds(replaced, self.interval_seconds))
            self._conflict_until = now + max(self.ttl_seconds, theirs)
        elif self._conflict_until and now >= self._conflict_until:
            self._conflict_until = 0.0
            _log.info("replica id no longer in use by another gateway",
                      extra={"replica": self.replica})  # fmt: skip

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.beat()
            except (RegistryError, redis.RedisError) as exc:
                _log.debug("heartbeat not written", extra={"detail": str(exc)})
            self._wake.wait(self.interval_seconds)
        try:  # free the id for a gateway started in this one's place
            self._registry.remove_heartbeat(self.replica, self.instance)
        except (RegistryError, redis.RedisError) as exc:
            _log.debug("heartbeat not removed; it expires", extra={"detail": str(exc)})
