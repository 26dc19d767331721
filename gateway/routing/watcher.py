"""Follow the registry's routing rules, off the request path.

One thread follows: it resyncs at start, after every reconnect, on an `{ns}:events` hint,
whenever the `{ns}:epoch` poll shows a change (pub/sub loses what is sent while
disconnected) and every FULL_READ_POLLS poll periods regardless (a key deleted, expired or
evicted behind the registry's back bumps no epoch). It never waits for a load: a rule whose
versions are all READY is applied at once; for any other, the loads its versions need are
started and the rule becomes the model's target, applied when they are READY, given up when
one FAILS, and superseded by any newer rule (an older revision is never applied after a
newer one). Until then, and whenever Redis is away, the last good table keeps serving.

A registry that answers but has lost what a served route came from (FLUSHALL, a Redis
restarted without persistence, keys deleted or expired) changes nothing served either: the
route and the versions its rule named stay, and readiness with them. The loss is reported
instead, once per change: a warning, onnxgate_registry_missing{model} (and
onnxgate_registry_epoch_missing for the whole namespace) and the heartbeat's errors. The
models are not imported again from --models: the bootstrap runs once, as an operator may
have removed them on purpose. A second thread only listens for hints; the heartbeat has a
thread of its own (heartbeat.py).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import redis

from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.models.store import VersionState, VersionStore
from gateway.routing.artifacts import ArtifactCache
from gateway.routing.heartbeat import FollowerState, Heartbeat
from gateway.routing.table import Route, RouteTable, RouteTableHolder
from registry_client.client import RegistryClient, unregistered_versions
from registry_client.errors import NotFound, RegistryError, Rejected
from registry_client.repository import VersionSource
from registry_client.schema import RouteRule

__all__ = ["RuleWatcher"]

_log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 2.0
# An epoch read (one GET) unanswered this long means Redis is unreachable, though a blackholed
# connection raises nothing until its socket timeout has passed on every retry (about 20 s).
UNANSWERED_POLL_SECONDS = 2.0
# Every this many poll periods every rule is read even when the epoch has not changed.
FULL_READ_POLLS = 10


def _optional_int(value: object) -> int | None:
    return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else None


@dataclass(frozen=True, slots=True)
class _Loss:
    """What the registry lost of a served model: why (as the heartbeat shows it) and the
    versions its last rule named, kept loaded while the rule is gone."""

    reason: str
    kept: tuple[str, ...] = ()


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
        self._lost: dict[str, _Loss] = {}  # served model -> what the registry no longer has
        self._epoch_seen = False  # a non-zero epoch was read: 0 then means it was wiped
        self._epoch_missing = False
        self._full_read_at = 0.0  # monotonic time of the next read of every rule
        self.published = FollowerState()
        self._poll_started: float | None = None  # when the epoch read in progress was sent
        self.heartbeat = Heartbeat(registry, replica, versions, routes, self.published,
                                   heartbeat_seconds)  # fmt: skip
        versions.on_settled(self._wake.set)  # a finished load may complete a target
        self._threads = [
            threading.Thread(target=self._follow, name="onnxgate-rules", daemon=True),
            threading.Thread(target=self._listen, name="onnxgate-events", daemon=True),
        ]

    def start(self) -> None:
        """Start following; returns at once (readiness comes with the first sync)."""
        for thread in self._threads:
            thread.start()
        self.heartbeat.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the threads, waiting at most `timeout` seconds in all (a thread stuck in a
        Redis call is a daemon and is left behind)."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        self.heartbeat.stop(timeout)
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))

    def is_alive(self) -> bool:
        """Whether the follower, the hint listener and the heartbeat all still run."""
        return all(t.is_alive() for t in self._threads) and self.heartbeat.is_alive()

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
                self._note_epoch(epoch)
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

    def _note_epoch(self, epoch: int) -> None:
        """Report the namespace wiped while its epoch, seen before, reads 0: every registry
        write bumps it, so only a lost key reads 0 again."""
        missing = epoch == 0 and self._epoch_seen
        self._epoch_seen = self._epoch_seen or epoch > 0
        if missing == self._epoch_missing:
            return
        self._epoch_missing = missing
        self._metrics.registry_epoch_missing.set(int(missing))
        if missing:
            _log.warning("registry epoch gone: the namespace was flushed or deleted, or Redis"
                         " restarted without persistence; serving the last good rules",
                         extra={"namespace": self._registry.keys.namespace})  # fmt: skip
        else:
            _log.info("registry epoch written again",
                      extra={"namespace": self._registry.keys.namespace})  # fmt: skip

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
        self._note_losses(self._losses(rules, invalid))
        self._rules = rules
        self._synced_once = True
        self._advance()

    def _losses(
        self, rules: Mapping[str, RouteRule], invalid: Mapping[str, object]
    ) -> dict[str, _Loss]:
        """Each served model whose rule, or a version its served rule names, the registry no
        longer has (an invalid document is not lost: it is reported as invalid)."""
        served = self._routes.current().routes
        lost: dict[str, _Loss] = {}
        pairs: list[tuple[str, str]] = []
        for model, route in served.items():
            rule = rules.get(model)
            if rule is not None:
                named = {*route.versions, *(v for v, _ in route.shadows)}
                if rule.revision == route.revision:  # also the versions kept for pins
                    named.update(rule.versions)
                pairs.extend((model, version) for version in sorted(named))
            elif model not in invalid:
                previous, last_read = self._lost.get(model), self._rules.get(model)
                kept = previous.kept if previous else tuple(last_read.versions if last_read else ())
                lost[model] = _Loss(f"rule gone from the registry; revision {route.revision}"
                                    " keeps serving", kept)  # fmt: skip
        for model, version in sorted(unregistered_versions(self._registry, pairs)):
            if model not in lost:
                lost[model] = _Loss(f"version {version} gone from the registry; revision"
                                    f" {served[model].revision} keeps serving")  # fmt: skip
        return lost

    def _note_losses(self, lost: dict[str, _Loss]) -> None:
        """Record what the registry lost; log and count each change once."""
        appeared = {m: loss.reason for m, loss in lost.items()
                    if m not in self._lost or self._lost[m].reason != loss.reason}  # fmt: skip
        recovered = sorted(self._lost.keys() - lost.keys())
        self._lost = lost
        for model in appeared:
            self._metrics.registry_missing.labels(model).set(1)
        for model in recovered:
            self._metrics.registry_missing.labels(model).set(0)
        if appeared:
            _log.warning("the registry lost what served models came from; their last good"
                         " rules keep serving", extra={"lost": appeared})  # fmt: skip
        if recovered:
            _log.info("the registry has again what served models came from",
                      extra={"models": recovered})  # fmt: skip

    def _start_loads(self, rule: RouteRule, wanted: Route) -> None:
        """Start loading what the rule needs and is not READY or LOADING already; a version
        the registry cannot describe fails the rule at once."""
        for version in rule.versions:
            status = self._versions.status(rule.model, version)
            if status is not None and status.state is not VersionState.FAILED:
                continue
            try:
                stored = self._registry.show_version(rule.model, version)
                model = self._registry.show_model(rule.model)
                path = self._artifacts.local_path(stored["artifact_uri"], stored["sha256"])
            except (NotFound, Rejected, ValueError) as exc:
                self._give_up(rule.model, wanted, f"revision {rule.revision} not applied: {exc}")
                return
            source = VersionSource(
                rule.model, version, path, stored["sha256"],
                batch_delay_us=_optional_int(model.get("batch_delay_us")),
                max_batch_size=_optional_int(model.get("max_batch_size")),
            )  # fmt: skip
            fetch = None
            if self._artifacts.is_uploaded(stored["artifact_uri"]):
                fetch = functools.partial(self._artifacts.fetch, stored["sha256"])
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
        targets = {m: r.revision for m, r in self._targets.items()}
        rejected = {m: r.revision for m, r in self._given_up.items()}
        errors = dict(self._errors)
        for model, loss in self._lost.items():
            errors[model] = f"{errors[model]}; {loss.reason}" if model in errors else loss.reason
        published = self.published
        if (targets, rejected, errors, routes) != (
            published.targets, published.rejected, published.errors, dict(current),
        ):  # fmt: skip
            published.targets, published.rejected, published.errors = targets, rejected, errors
            self.heartbeat.beat_now()
        self._on_change()

    def _give_up(self, model: str, wanted: Route, error: str) -> None:
        self._targets.pop(model, None)
        self._given_up[model] = wanted
        self._errors[model] = error
        self._metrics.rules_rejected.labels("not_applied").inc()

    def _record_applied(self, model: str, route: Route) -> None:
        if model in self._lost:  # the new route may not need what was lost: read again
            self._resync_needed = True
            self._wake.set()
        else:
            self._metrics.registry_missing.labels(model).set(0)
        self._metrics.route_revision.labels(model).set(route.revision)
        self._metrics.route_applied_timestamp.labels(model).set(time.time())
        for version, weight in route.weights.items():
            self._metrics.route_weight.labels(model, version).set(weight)
        _log.info("rule applied", extra={"model": model, "revision": route.revision,
                                         "weights": route.weights})  # fmt: skip

    def _unload_unrouted(self, routes: dict[str, Route]) -> None:
        """Unload, or stop loading, every version neither a served route nor a rule names."""
        needed = {(m, v) for m, r in routes.items() for v in r.versions}
        needed |= {(m, v) for m, rule in self._rules.items() for v in rule.versions}
        needed |= {(m, v) for m, loss in self._lost.items() for v in loss.kept}
        for status in self._versions.statuses():
            key = (status.model, status.version)
            if key not in needed:
                self._versions.unload(*key)

    # -- the hint thread --------------------------------------------------------------------

    def _listen(self) -> None:
        try:
            self._listen_until_stopped()
        except Exception:
            # A gateway that stops does not wait for this thread: the client's connections
            # may be closed under it, which is no error then.
            if not self._stop.is_set():
                raise

    def _listen_until_stopped(self) -> None:
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
                    if pubsub.get_message(timeout=0.25) is not None:
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
