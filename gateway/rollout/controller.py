"""The rollout controller: runs in every gateway, acts only while it holds the leader lease.

Each tick the leader reads every active rollout; at the end of an interval it judges the
candidate against the baseline on that interval's statistics (registry_client.rollout.judge)
and, with label gates, on the labels of their predictions since the phase began
(registry_client.rollout.quality_checks), and advances, holds or rolls back (decisions.py),
writing the decision and the rule it serves in one transaction that also checks it still holds
the lease. A rule written by anyone else pauses the rollout: the controller never writes over
an operator. Everything here is background work: no request waits on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import redis

from gateway.drift.recorder import OUTPUT_PREFIX
from gateway.metrics.rollout import RolloutMetrics
from gateway.rollout.decisions import next_decision
from gateway.rollout.quality_events import QualityEvents
from gateway.telemetry.periodic import Periodic
from registry_client.client import RegistryClient
from registry_client.drift.reference import FeatureReference
from registry_client.drift.statistics import feature_drift
from registry_client.errors import Conflict, RegistryError
from registry_client.records.leases import Lease
from registry_client.rollout.judge import CARRIED, Check, Counters, judge, subtract, sum_counters
from registry_client.rollout.plan import PAUSED, PROMOTED, SHADOWING, RolloutState
from registry_client.rollout.quality_checks import label_checks, read_label_quality
from registry_client.rollout.store import LeaseLost, RolloutStore, Unreadable
from registry_client.schema import SchemaError
from registry_client.stats.window import WINDOW_SECONDS, window_of

__all__ = ["RolloutController"]

_log = logging.getLogger(__name__)
Notify = Callable[[str, Mapping[str, object]], None]
# Webhook events: the decisions an operator wants to hear of without watching a dashboard.
NOTIFIED = {"promote": "promoted", "rollback": "rolled_back", "pause": "paused"}


class RolloutController:
    """Drives rollouts while this gateway holds the lease; thread: its own Periodic."""

    def __init__(
        self,
        client: RegistryClient,
        replica: str,
        metrics: RolloutMetrics,
        *,
        tick_seconds: float,
        lease_seconds: float,
        notify: Notify | None = None,
        clock: Callable[[], float] = time.time,
        instance: str | None = None,
        quality_events: QualityEvents | None = None,
    ) -> None:
        self._client = client
        self._quality_events = quality_events  # judged on this thread while leading
        self._store = RolloutStore(client, clock)
        self._metrics = metrics
        self._notify = notify
        self._clock = clock
        self.replica = replica
        self._actor = f"rollout-controller@{replica}"
        # `instance` (this gateway's heartbeat token) tells this process's lease from another
        # one's under the same replica id; one is drawn when not given.
        self._lease = Lease(client, client.keys.rollout_leader, replica, lease_seconds, instance)
        self._periodic = Periodic("rollout-controller", tick_seconds, self.tick)
        self.leading = False
        self._failing = False
        self._unreadable: set[str] = set()

    def start(self) -> None:
        self._periodic.start()

    def stop(self) -> None:
        """Stop ticking and hand the lease over at once rather than after its TTL."""
        self._periodic.stop()
        if self.leading:
            try:
                self._lease.release()
            except (RegistryError, redis.RedisError):
                pass  # it expires by itself
            self._lead(False)

    def tick(self) -> None:
        """Renew or take the lease; while leading, drive every active rollout one step."""
        try:
            self._lead(self._lease.hold())
            if self.leading:
                for model in self._store.models():
                    self._drive_model(model)
                if self._quality_events is not None:
                    self._quality_events.tick(self._clock(), self._lease.value)
        except redis.ResponseError as exc:  # refused: NOPERM from an ACL, OOM, read-only
            if not self._failing:
                _log.error(
                    "Redis refuses the rollout controller's reads or writes; give this"
                    " gateway's Redis user the controller's rights (docs/security.md) or"
                    " run it with --no-rollout-controller", extra={"reason": str(exc)},
                )  # fmt: skip
            self._failing = True
            self._lead(False)
            return
        except (RegistryError, redis.RedisError) as exc:
            if not self._failing:
                _log.warning("rollout controller cannot reach the registry; will retry",
                             extra={"reason": str(exc)})  # fmt: skip
            self._failing = True
            return
        if self._failing:
            _log.info("rollout controller reaches the registry again")
        self._failing = False

    def _lead(self, leading: bool) -> None:
        if leading != self.leading:
            _log.info("rollout controller " + ("leads" if leading else "no longer leads"),
                      extra={"replica": self.replica})  # fmt: skip
            if not leading:
                self._metrics.step.clear()
                self._metrics.candidate_weight.clear()
        self.leading = leading
        self._metrics.leader.set(1 if leading else 0)

    def _drive_model(self, model: str) -> None:
        try:
            state = self._store.get(model)
            if state is not None:
                self._export(state)
                if state.active and state.status != PAUSED:
                    self._drive(state)
        except (SchemaError, Unreadable) as exc:  # its rollout or rule: the others go on
            if model not in self._unreadable:  # once per document, not every tick
                _log.error("rollout skipped: a document is unreadable",
                           extra={"model": model, "reason": str(exc)})  # fmt: skip
            self._unreadable.add(model)
            return
        except LeaseLost:
            self._lead(False)
        except Conflict:
            pass  # an operator changed it meanwhile: read again next tick
        self._unreadable.discard(model)

    def _drive(self, state: RolloutState) -> None:
        plan, now = state.plan, self._clock()
        rule = self._client.get_route(plan.model)
        if rule is None or rule.revision != state.route_revision:
            reason = ("the rule was deleted" if rule is None else
                      f"the rule was changed to revision {rule.revision} by {rule.updated_by}"
                      + (f" ({rule.reason})" if rule.reason else ""))  # fmt: skip
            self._decide(state, "pause", reason, state.evolve(status=PAUSED,
                         paused_status=state.status), route=False, checks=())  # fmt: skip
            return
        if state.interval_started_at == 0:
            self._begin_interval(state, now)
            return
        if now < state.next_check_at:
            return
        current = window_of(now)
        first = int(state.snapshot.get("window", current))
        windows = self._client.stats.read_windows(plan.model, first, current).by_window
        cumulative = sum_counters(windows.values(), plan.baseline)
        interval = subtract(cumulative, state.snapshot.get("counters", {}))
        fresh: dict[str, object] = {
            "window": current, "counters": sum_counters([windows.get(current, {})], plan.baseline),
        }  # fmt: skip
        self._baseline_when_idle(state, interval, fresh)
        shadowing = state.status == SHADOWING
        drift = {} if shadowing else self._drift(state)
        checks = judge(plan, shadowing, interval, drift, self._load_failures(state))
        if plan.label_gated:  # read here, on the controller's thread: never on a request's
            waited = now - state.labels_waiting_since if state.labels_waiting_since else 0.0
            found = read_label_quality(self._client, state, now)
            checks += label_checks(plan, found, waited)
        for check in checks:
            self._metrics.checks.labels(plan.model, check.name, check.result).inc()
        decision, reason, after, route = next_decision(state, checks, now, fresh)
        self._decide(state, decision, reason, after, route=route, checks=checks)

    def _baseline_when_idle(
        self, state: RolloutState, interval: Counters, fresh: dict[str, object]
    ) -> None:
        """At a 100% step the baseline serves nothing to compare with: the candidate is then
        judged against the baseline's last interval that had enough requests (kept in the
        snapshot from one interval to the next)."""
        plan = state.plan
        key = f"{plan.baseline}|primary"
        served = interval.get(key, {}).get("requests", 0)
        kept = state.snapshot.get("baseline")
        if served >= plan.min_requests:
            fresh["baseline"] = interval[key]
        elif kept is not None:
            fresh["baseline"] = kept
            if state.candidate_weight == 100:
                interval[key] = {**kept, CARRIED: True}

    def _begin_interval(self, state: RolloutState, now: float) -> None:
        """Snapshot the counters the first interval is measured from (no audit entry)."""
        current = window_of(now)
        windows = self._client.stats.read_windows(state.plan.model, current, current).by_window
        snapshot = {"window": current,
                    "counters": sum_counters(windows.values(), state.plan.baseline)}  # fmt: skip
        after = state.evolve(interval_started_at=now, snapshot=snapshot,
                             next_check_at=now + state.plan.interval_seconds)  # fmt: skip
        self._store.commit(state, after, actor=self._actor, action="", reason="", route=False,
                           leader=self._lease.value)  # fmt: skip

    def _decide(
        self, state: RolloutState, decision: str, reason: str, after: RolloutState, *,
        route: bool, checks: tuple[Check, ...] | list[Check],
    ) -> None:  # fmt: skip
        now = self._clock()
        after = after.evolve(
            last_decision={"at": now, "decision": decision, "reason": reason, "by": self.replica},
            last_checks=tuple(c.to_dict() for c in checks),
        )
        stored = self._store.commit(state, after, actor=self._actor, action=decision, reason=reason,
                                    route=route, leader=self._lease.value)  # fmt: skip
        model = state.plan.model
        self._metrics.decisions.labels(model, decision).inc()
        self._metrics.last_decision.labels(model, decision).set(now)
        self._export(stored)
        log = _log.warning if decision in ("rollback", "pause") else _log.info
        log(f"rollout {decision}", extra={"model": model, "candidate": state.plan.candidate,
                                          "reason": reason})  # fmt: skip
        if self._notify is not None and decision in NOTIFIED:
            self._notify(NOTIFIED[decision], {
                "model": model, "candidate": state.plan.candidate,
                "baseline": state.plan.baseline, "status": stored.status,
                "step": stored.step + 1, "candidate_weight": stored.candidate_weight,
                "reason": reason, "checks": [c.to_dict() for c in checks],
                "replica": self.replica, "route_revision": stored.route_revision,
            })  # fmt: skip

    def _drift(self, state: RolloutState) -> dict[str, tuple[float, str] | None]:
        """Per kind (input, output), the largest PSI of a feature, candidate against baseline
        over the same recent minutes; None when no feature has enough rows on both sides.
        Sketches cannot be subtracted, so this looks at whole minutes, not the interval."""
        plan = state.plan
        since = max(plan.interval_seconds, WINDOW_SECONDS)
        ours = self._client.drift.read(plan.model, plan.candidate, since).features
        theirs = self._client.drift.read(plan.model, plan.baseline, since).features
        worst: dict[str, tuple[float, str] | None] = {"input": None, "output": None}
        for name, sketch in sorted(ours.items()):
            other = theirs.get(name)
            if other is None or min(sketch.count, other.count) < plan.min_requests:
                continue
            baseline = FeatureReference.from_sketch(other)
            if baseline is None:
                continue
            psi = feature_drift(name, sketch, baseline).psi
            kind = "output" if name.startswith(OUTPUT_PREFIX) else "input"
            found = worst[kind]
            if psi is not None and (found is None or psi > found[0]):
                worst[kind] = (psi, name)
        return worst

    def _load_failures(self, state: RolloutState) -> dict[str, str]:
        """Live replicas that failed to load the candidate, and why (their heartbeats, as
        `gatectl route status` shows them)."""
        candidate = state.plan.candidate
        replicas = self._client.replica_status(state.plan.model)["replicas"]
        return {r["replica"]: str(r["failed"][candidate]) for r in replicas
                if candidate in r["failed"]}  # fmt: skip

    def _export(self, state: RolloutState) -> None:
        labels = (state.plan.model, state.plan.candidate)
        step = len(state.plan.steps) if state.status == PROMOTED else state.step + 1
        self._metrics.step.labels(*labels).set(step)
        self._metrics.candidate_weight.labels(*labels).set(state.candidate_weight)
