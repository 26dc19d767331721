"""Follow the registry's routing rules (DESIGN.md 5-6), off the request path.

One thread resyncs: at start, after every reconnect, on an `{ns}:events` hint and whenever the
`{ns}:epoch` poll shows a change (pub/sub loses what is sent while disconnected). A rule becomes
active only once every version it names is fetched, sha256-verified, loaded and warmed; until
then, and whenever Redis is away, the last good table keeps serving. A second thread only
listens for hints.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import wait
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlparse
from urllib.request import url2pathname

import redis

from gateway.metrics import GatewayMetrics
from gateway.models.store import VersionState, VersionStore
from gateway.routing.table import Route, RouteTable, RouteTableHolder
from registry_client.client import RegistryClient
from registry_client.errors import NotFound, RegistryError, Rejected
from registry_client.repository import VersionSource
from registry_client.schema import BLOB_SCHEME, RouteRule

__all__ = ["RuleWatcher"]

_log = logging.getLogger(__name__)
LOAD_TIMEOUT_SECONDS = 600.0
MAX_BACKOFF_SECONDS = 2.0
# An epoch read (one GET) unanswered this long means Redis is unreachable, though a blackholed
# connection raises nothing until its socket timeout has passed on every retry (about 20 s).
UNANSWERED_POLL_SECONDS = 2.0
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _file_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"artifact scheme {parsed.scheme!r} is not supported")
    return Path(url2pathname(parsed.path))


def _optional_int(value: object) -> int | None:
    return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else None


class RuleWatcher:
    """Keeps the route table equal to the registry's rules; owns its two threads."""

    def __init__(
        self,
        registry: RegistryClient,
        versions: VersionStore,
        routes: RouteTableHolder,
        metrics: GatewayMetrics,
        *,
        replica: str,
        poll_seconds: float,
        heartbeat_seconds: float,
        on_first_sync: Callable[[], None],
        artifact_cache: Path,
        bootstrap: Callable[[], None] | None = None,
        max_artifact_bytes: int = 2**31 - 1,
    ) -> None:
        self._registry = registry
        self._versions = versions
        self._routes = routes
        self._metrics = metrics
        self._replica = replica
        self._poll_seconds = poll_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._on_first_sync = on_first_sync
        self._bootstrap = bootstrap
        self._artifact_cache = artifact_cache
        self._max_artifact_bytes = max_artifact_bytes
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._resync_needed = True
        self._synced_once = False
        self._epoch = -1
        self._given_up: dict[str, Route] = {}  # model -> the route whose versions failed to load
        self._refused: dict[str, str] = {}  # model -> digest of its last invalid document
        self._errors: dict[str, str] = {}
        self._last_heartbeat = 0.0
        self._poll_started: float | None = None  # when the epoch read in progress was sent
        self._threads = [
            threading.Thread(target=self._follow, name="onnxgate-rules", daemon=True),
            threading.Thread(target=self._listen, name="onnxgate-events", daemon=True),
        ]

    def start(self) -> None:
        """Start following; returns at once (readiness comes with the first sync)."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both threads and wait for them."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=10)

    # -- the follower thread ----------------------------------------------------------------

    def _follow(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                if self._bootstrap is not None:
                    self._run_bootstrap()
                self._poll_started = time.monotonic()
                try:
                    epoch = self._registry.epoch()
                finally:
                    self._poll_started = None
                self._metrics.redis_connected.set(1)
                if self._resync_needed or epoch != self._epoch:
                    self._resync_needed = False
                    self._resync()
                    self._epoch = epoch
                self._maybe_heartbeat()
                backoff = 0.05
            except (RegistryError, redis.RedisError) as exc:
                self._metrics.redis_connected.set(0)
                self._resync_needed = True  # what changed while away is read on return
                _log.warning("registry unreachable; serving the last good rules",
                             extra={"detail": str(exc)})  # fmt: skip
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            self._wake.wait(self._poll_seconds)
            self._wake.clear()

    def _run_bootstrap(self) -> None:
        assert self._bootstrap is not None
        try:
            self._bootstrap()
        except Rejected as exc:  # a bad directory is reported once, not retried forever
            _log.error("model directory not imported", extra={"reason": str(exc)})
        self._bootstrap = None

    def _resync(self) -> None:
        rules, invalid = self._registry.rules()
        for model, refused in invalid.items():
            self._errors[model] = f"invalid rule document: {refused.reason}"
            if self._refused.get(model) != refused.digest:
                self._refused[model] = refused.digest
                self._metrics.rules_rejected.labels("invalid").inc()
                _log.error("invalid rule ignored; the last good rule keeps serving",
                           extra={"model": model, "reason": refused.reason})  # fmt: skip
        current = self._routes.current().routes
        routes = dict(current)
        for model, rule in rules.items():
            self._refused.pop(model, None)
            # Content, not only the revision: a registry restored from scratch counts again.
            split = tuple((s.version, s.weight) for s in rule.split)
            shadows = tuple((s.version, s.percent) for s in rule.shadows)
            wanted = Route.of(split, rule.revision, rule.sticky, shadows)
            if current.get(model) == wanted or self._given_up.get(model) == wanted:
                continue
            if self._load_versions(rule):
                routes[model] = wanted
                self._errors.pop(model, None)
                self._given_up.pop(model, None)  # set again later, it is tried again
                self._record_applied(model, wanted)
            else:
                self._given_up[model] = wanted
                self._metrics.rules_rejected.labels("not_applied").inc()
        if routes != dict(current):
            self._routes.replace(RouteTable(MappingProxyType(routes)))
        self._unload_unrouted(routes, rules)
        if not self._synced_once:
            self._synced_once = True
            self._on_first_sync()

    def _load_versions(self, rule: RouteRule) -> bool:
        """Load what the rule needs; True when every version it names is READY."""
        pending = []
        for version in rule.versions:
            status = self._versions.status(rule.model, version)
            if status is not None and status.state is VersionState.READY:
                continue
            try:
                stored = self._registry.show_version(rule.model, version)
                path = self._artifact_path(stored["artifact_uri"], stored["sha256"])
                model = self._registry.show_model(rule.model)
            except (NotFound, Rejected, ValueError, OSError) as exc:  # OSError: the cache's disk
                self._errors[rule.model] = f"revision {rule.revision} not applied: {exc}"
                return False
            source = VersionSource(
                rule.model, version, path, stored["sha256"],
                batch_delay_us=_optional_int(model.get("batch_delay_us")),
                max_batch_size=_optional_int(model.get("max_batch_size")),
            )  # fmt: skip
            pending.append(self._versions.load(source))
        wait(pending, timeout=LOAD_TIMEOUT_SECONDS)
        for version in rule.versions:
            status = self._versions.status(rule.model, version)
            if status is None or status.state is not VersionState.READY:
                reason = status.reason if status is not None else "not loaded"
                self._errors[rule.model] = f"revision {rule.revision} not applied: version" \
                    f" {version} {reason}"  # fmt: skip
                _log.error(
                    "rule not applied: a version did not load; the previous rule keeps serving",
                    extra={"model": rule.model, "revision": rule.revision, "version": version,
                           "reason": reason},
                )  # fmt: skip
                return False
        return True

    def _artifact_path(self, uri: str, sha256: str) -> Path:
        """A local file with the artifact's bytes; uploaded ones are fetched into the cache.

        The cache is keyed by sha256 and written by rename, and the loader hashes what it
        loads, so a torn or tampered cache file fails the load instead of serving."""
        if not uri.startswith(f"{BLOB_SCHEME}:"):
            return _file_path(uri)
        if not _SHA256.fullmatch(sha256):  # it names a file: nothing else may reach the path
            raise ValueError(f"stored sha256 {sha256[:80]!r}: expected 64 lowercase hex digits")
        cached = self._artifact_cache / f"{sha256}.onnx"
        if cached.is_symlink() or (cached.exists() and not cached.is_file()):
            # Only this process writes here, by rename: anything else was put here to be
            # loaded instead. It is replaced with the registry's bytes, never followed.
            _log.warning("artifact cache entry is not a file of ours; fetching it again",
                         extra={"entry": cached.name})  # fmt: skip
            if cached.is_dir() and not cached.is_symlink():
                raise ValueError(f"artifact cache entry {cached.name} is a directory")
            cached.unlink()
        if not cached.exists():
            # Worker processes share the cache: the name is unique per process and thread.
            partial = cached.with_suffix(f".partial-{os.getpid()}-{threading.get_ident()}")
            partial.write_bytes(self._registry.fetch_blob(sha256, self._max_artifact_bytes))
            partial.replace(cached)
        return cached

    def _record_applied(self, model: str, route: Route) -> None:
        self._metrics.route_revision.labels(model).set(route.revision)
        self._metrics.route_applied_timestamp.labels(model).set(time.time())
        for version, weight in route.weights.items():
            self._metrics.route_weight.labels(model, version).set(weight)
        _log.info("rule applied", extra={"model": model, "revision": route.revision,
                                         "weights": route.weights})  # fmt: skip

    def _unload_unrouted(self, routes: dict[str, Route], rules: dict[str, RouteRule]) -> None:
        needed = {(m, v) for m, r in routes.items() for v in r.versions}
        needed |= {(m, v) for m, rule in rules.items() for v in rule.versions}
        for status in self._versions.statuses():
            key = (status.model, status.version)
            if key not in needed and status.state is not VersionState.LOADING:
                self._versions.unload(*key)

    def _maybe_heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat < self._heartbeat_seconds:
            return
        self._last_heartbeat = now
        applied = {m: r.revision for m, r in self._routes.current().routes.items()}
        loaded = [f"{s.model}:{s.version}:{s.state.name}" for s in self._versions.statuses()]
        failed = {f"{s.model}:{s.version}": s.reason for s in self._versions.statuses()
                  if s.state is VersionState.FAILED}  # fmt: skip
        self._registry.heartbeat(
            self._replica,
            {"applied": json.dumps(applied), "versions": json.dumps(loaded),
             "failed": json.dumps(failed), "errors": json.dumps(self._errors),
             "updated_at": str(time.time())},
            ttl_seconds=max(3, int(self._heartbeat_seconds * 3)),
        )  # fmt: skip

    # -- the hint thread --------------------------------------------------------------------

    def _listen(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                pubsub = self._registry.events()
            except (RegistryError, redis.RedisError):
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = 0.05
            self._resynchronise()  # (re)subscribed: read what may have been missed
            # redis-py reconnects and resubscribes by itself when the connection drops, and
            # this loop sees no error: hints published meanwhile are lost unless that
            # reconnect, too, asks for a resync.
            connection = pubsub.connection
            if connection is not None:
                connection.register_connect_callback(self._resynchronise)
            try:
                while not self._stop.is_set():
                    if pubsub.get_message(timeout=0.5) is not None:
                        self._wake.set()
                    self._report_unanswered_poll()
            except (redis.RedisError, OSError):
                self._wake.set()
            finally:
                if connection is not None:  # the pool hands the connection to others next
                    connection.deregister_connect_callback(self._resynchronise)
                pubsub.close()

    def _report_unanswered_poll(self) -> None:
        """Show Redis as unreachable while the follower's epoch read waits past
        UNANSWERED_POLL_SECONDS; the follower shows it reachable once an answer comes."""
        started = self._poll_started
        if started is None or time.monotonic() - started < UNANSWERED_POLL_SECONDS:
            return
        self._metrics.redis_connected.set(0)
        if self._poll_started != started:  # answered meanwhile, perhaps before we set 0
            self._metrics.redis_connected.set(1)

    def _resynchronise(self, _connection: object = None) -> None:
        """Have the follower read every rule again now (the subscription was (re)made)."""
        self._resync_needed = True
        self._wake.set()
