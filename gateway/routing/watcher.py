"""Follow the registry's routing rules, off the request path.

One thread follows: it resyncs at start, after every reconnect, on an `{ns}:events` hint,
whenever the `{ns}:epoch` poll shows a change, a lower epoch too (pub/sub loses what is sent
while disconnected) and every FULL_READ_POLLS poll periods regardless (a key deleted, expired
or evicted behind the registry's back bumps no epoch). It never waits for a load: a rule whose
versions are all READY is applied at once; for any other, the loads its versions need are
started and the rule becomes the model's target, applied when they are READY, given up when
one FAILS, and superseded by any newer rule (an older revision is never applied after a
newer one). Until then, and whenever Redis is away, the last good table keeps serving; so
does it when the registry answers without what a served route came from (registry_loss.py).

Hints come on a thread of their own (hints.py), and so do heartbeats (heartbeat.py), which
show what this follower publishes: the rules it works towards and why others are not applied.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import redis

from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.models.store import VersionState, VersionStore
from gateway.routing.artifacts import ArtifactCache
from gateway.routing.heartbeat import FollowerState, Heartbeat
from gateway.routing.hints import HintListener
from gateway.routing.registry_loss import RegistryLosses
from gateway.routing.table import Route, RouteTable, RouteTableHolder
from registry_client.client import RegistryClient
from registry_client.errors import NotFound, RegistryError, Rejected
from registry_client.records.rule_documents import RouteRule

__all__ = ["RuleWatcher"]

_log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 2.0  # between epoch reads while Redis is away
# An epoch read (one GET) unanswered this long means Redis is unreachable, though a blackholed
# connection raises nothing until its socket timeout has passed on every retry (about 20 s).
UNANSWERED_POLL_SECONDS = 2.0
# Every this many poll periods every rule is read even when the epoch has not changed.
FULL_READ_POLLS = 10


class RuleWatcher:
    """Keeps the route table equal to the registry's rules; owns the follower thread, the
    hint listener and the heartbeat."""

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
        on_change: Callable[[], None],
        artifact_cache: Path,
        bootstrap: Callable[[], None] | None = None,
        max_artifact_bytes: int = 2**31 - 1,
    ) -> None:
        self._registry = registry
        self._versions = versions
        self._routes = routes
        self._metrics = metrics
        self._poll_seconds = poll_seconds
        self._on_change = on_change
        self._bootstrap = bootstrap
        self._artifacts = ArtifactCache(registry, artifact_cache, max_artifact_bytes)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._resync_needed = True
        self._synced_once = False
        self._epoch = -1
        self._rules: dict[str, RouteRule] = {}  # the registry's rules as last read
        self._targets: dict[str, Route] = {}  # model -> newest rule, waiting for its loads
        self._given_up: dict[str, Route] = {}  # model -> the route whose versions failed to load
        self._refused: dict[str, str] = {}  # model -> digest of its last invalid document
        self._errors: dict[str, str] = {}
        self._losses = RegistryLosses(registry, metrics)
        self._full_read_at = 0.0  # monotonic time of the next read of every rule
        self.published = FollowerState()
        self._poll_started: float | None = None  # when the epoch read in progress was sent
        self.heartbeat = Heartbeat(registry, replica, versions, routes, self.published,
                                   heartbeat_seconds)  # fmt: skip
        versions.on_settled(self._wake.set)  # a finished load may complete a target
        self._thread = threading.Thread(target=self._follow, name="onnxgate-rules", daemon=True)
        self._hints = HintListener(registry, self._stop, on_hint=self._resynchronise,
                                   on_subscribed=self._resynchronise,
                                   check=self._report_unanswered_poll)  # fmt: skip

    def start(self) -> None:
        """Start following; returns at once (readiness comes with the first sync)."""
        self._thread.start()
        self._hints.start()
        self.heartbeat.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the threads within `timeout` s in all (one stuck in Redis is left behind)."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        self.heartbeat.stop(timeout)
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        self._hints.join(max(deadline - time.monotonic(), 0.0))

    def is_alive(self) -> bool:
        """Whether the follower, the hint listener and the heartbeat all still run."""
        return self._thread.is_alive() and self._hints.is_alive() and self.heartbeat.is_alive()

    def is_serving_every_rule(self) -> bool:
        """Readiness: synced once, and every model with a rule is served by it or by its
        last good one (a rule still loading, or failed, counts while an older one serves).
        A rule the registry lost keeps the replica ready: its last good route still serves
        correctly, and taking every replica out of its balancer over a flushed Redis would
        turn a registry incident into an outage (the loss is reported instead)."""
        served = self._routes.current().routes
        return self._synced_once and all(model in served for model in self._rules)

    def is_settled(self) -> bool:
        """Synced once, and no model waits for its first rule's loads any more: each is
        served, or its versions failed."""
        served = self._routes.current().routes
        return self._synced_once and all(m in served or m in self._given_up for m in self._rules)

    # -- the follower thread ----------------------------------------------------------------

    def _follow(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            self._wake.clear()  # before the work: a load ending meanwhile wakes the next wait
            self._advance()  # loads that ended need no Redis to be applied or given up
            try:
                if self._bootstrap is not None:
                    self._run_bootstrap()
                self._poll_started = time.monotonic()
                try:
                    epoch = self._registry.epoch()
                finally:
                    self._poll_started = None
                self._metrics.redis_connected.set(1)
                if self._losses.note_epoch(epoch):  # went back: revisions name other rules
                    self._given_up.clear()
                full_read = time.monotonic() >= self._full_read_at
                if self._resync_needed or epoch != self._epoch or full_read:
                    self._resync_needed = False
                    self._resync()
                    self._epoch = epoch
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

    def _run_bootstrap(self) -> None:
        assert self._bootstrap is not None
        try:
            self._bootstrap()
        except Rejected as exc:  # a bad directory is reported once, not retried forever
            _log.error("model directory not imported", extra={"reason": str(exc)})
        self._bootstrap = None

    def _resync(self) -> None:
        self._full_read_at = time.monotonic() + self._poll_seconds * FULL_READ_POLLS
        rules, invalid = self._registry.rules()
        for model, refused in invalid.items():
            self._errors[model] = f"invalid rule document: {refused.reason}"
            if self._refused.get(model) != refused.digest:
                self._refused[model] = refused.digest
                self._metrics.rules_rejected.labels("invalid").inc()
                _log.error("invalid rule ignored; the last good rule keeps serving",
                           extra={"model": model, "reason": refused.reason})  # fmt: skip
        current = self._routes.current().routes
        self._targets = {m: t for m, t in self._targets.items() if m in rules}
        for model, rule in rules.items():
            self._refused.pop(model, None)
            # Content, not only the revision: a registry restored from scratch counts again.
            split = tuple((s.version, s.weight) for s in rule.split)
            shadows = tuple((s.version, s.percent) for s in rule.shadows)
            wanted = Route.of(split, rule.revision, rule.sticky, shadows)
            if current.get(model) == wanted:
                self._targets.pop(model, None)
                continue
            if self._given_up.get(model) == wanted or self._targets.get(model) == wanted:
                continue
            # The newest rule is the target; an older one still loading is superseded.
            self._targets[model] = wanted
            self._start_loads(rule, wanted)
        self._losses.update(self._routes.current().routes, rules, invalid, self._rules)
        self._rules = rules
        self._synced_once = True
        self._advance()

    def _start_loads(self, rule: RouteRule, wanted: Route) -> None:
        """Start loading what the rule needs and is not READY or LOADING already; a version
        the registry cannot describe fails the rule at once."""
        for version in rule.versions:
            status = self._versions.status(rule.model, version)
            if status is not None and status.state is not VersionState.FAILED:
                continue
            try:
                source, fetch = self._artifacts.source(rule.model, version)
            except (NotFound, Rejected, ValueError) as exc:
                self._give_up(rule.model, wanted, f"revision {rule.revision} not applied: {exc}")
                return
            self._versions.load(source, fetch)

    def _advance(self) -> None:
        """Apply each target whose versions are all READY; give up on one whose version
        FAILED; unload what no rule needs any more. Reads no Redis."""
        current = self._routes.current().routes
        routes = dict(current)
        for model, wanted in list(self._targets.items()):
            states = {v: self._versions.status(model, v) for v in self._rules[model].versions}
            if all(s is not None and s.state is VersionState.READY for s in states.values()):
                del self._targets[model]
                routes[model] = wanted
                self._errors.pop(model, None)
                self._given_up.pop(model, None)  # set again later, it is tried again
                self._record_applied(model, wanted)
                continue
            for version, status in states.items():
                if status is None or status.state is VersionState.FAILED:
                    reason = status.reason if status is not None else "not loaded"
                    self._give_up(model, wanted, f"revision {wanted.revision} not applied:"
                                                 f" version {version} {reason}")  # fmt: skip
                    _log.error(
                        "rule not applied: a version did not load; the previous rule keeps serving",
                        extra={"model": model, "revision": wanted.revision, "version": version,
                               "reason": reason},
                    )  # fmt: skip
                    break
        if routes != dict(current):
            self._routes.replace(RouteTable(MappingProxyType(routes)))
        self._unload_unrouted(routes)
        changed = self.published.publish(
            targets={m: r.revision for m, r in self._targets.items()},
            rejected={m: r.revision for m, r in self._given_up.items()},
            errors=self._losses.with_reasons(self._errors),
        )
        if changed or routes != dict(current):
            self.heartbeat.beat_now()
        self._on_change()

    def _give_up(self, model: str, wanted: Route, error: str) -> None:
        self._targets.pop(model, None)
        self._given_up[model] = wanted
        self._errors[model] = error
        self._metrics.rules_rejected.labels("not_applied").inc()

    def _record_applied(self, model: str, route: Route) -> None:
        if self._losses.applied(model):  # the new route may not need what was lost
            self._resync_needed = True
            self._wake.set()
        self._metrics.route_revision.labels(model).set(route.revision)
        self._metrics.route_applied_timestamp.labels(model).set(time.time())
        self._metrics.set_route_weights(model, route.weights)
        _log.info("rule applied", extra={"model": model, "revision": route.revision,
                                         "weights": route.weights})  # fmt: skip

    def _unload_unrouted(self, routes: dict[str, Route]) -> None:
        """Unload, or stop loading, every version neither a served route nor a rule names."""
        needed = {(m, v) for m, r in routes.items() for v in r.versions}
        needed |= {(m, v) for m, rule in self._rules.items() for v in rule.versions}
        needed |= self._losses.kept_versions()
        for status in self._versions.statuses():
            key = (status.model, status.version)
            if key not in needed:
                self._versions.unload(*key)

    # -- run on the hint listener's thread -------------------------------------------------

    def _report_unanswered_poll(self) -> None:
        """Show Redis as unreachable while the follower's epoch read waits past
        UNANSWERED_POLL_SECONDS; the follower shows it reachable once an answer comes."""
        started = self._poll_started
        if started is None or time.monotonic() - started < UNANSWERED_POLL_SECONDS:
            return
        self._metrics.redis_connected.set(0)
        if self._poll_started != started:  # answered meanwhile, perhaps before we set 0
            self._metrics.redis_connected.set(1)

    def _resynchronise(self) -> None:
        """Have the follower read every rule now: a hint came (after a wipe the epoch counts
        from 0 again, so its value may be the one last read), or we (re)subscribed."""
        self._resync_needed = True
        self._wake.set()
