"""Rollouts in Redis: one document per model (`{ns}:rollout:{model}`), changed only together
with the rule it serves, in one transaction, audited (`rollout.*` entries next to the
`route.set` they cause) like every registry write."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from registry_client.client import AuditEntry, RegistryClient
from registry_client.errors import Conflict, NotFound, Rejected
from registry_client.records.leases import lease_holder
from registry_client.records.rule_documents import RouteRule, Shadow, Split
from registry_client.records.values import as_text, checked_name
from registry_client.rollout.evaluation_gate import refuse_unready_label_gates
from registry_client.rollout.plan import (
    ABORTED,
    ACTIVE,
    PAUSED,
    PROGRESSING,
    SHADOWING,
    RolloutPlan,
    RolloutState,
    served_split,
)
from registry_client.schema import SchemaError

__all__ = ["LeaseLost", "RolloutStore", "Unreadable", "audit_view"]


class LeaseLost(Conflict):
    """The controller writing a decision no longer holds the leader lease."""


class Unreadable(Rejected):
    """A stored rollout document that cannot be read."""


def audit_view(state: RolloutState) -> dict[str, Any]:
    """What the audit keeps of a rollout: where it is and why, not its counters."""
    return {"candidate": state.plan.candidate, "baseline": state.plan.baseline,
            "status": state.status, "step": state.step, "weight": state.candidate_weight,
            "failures": state.failures, "checks": list(state.last_checks)}  # fmt: skip


class RolloutStore:
    """Reads and writes rollout documents through a RegistryClient's pool."""

    def __init__(self, client: RegistryClient, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._keys = client.keys
        self._clock = clock

    def get(self, model: str) -> RolloutState | None:
        """The model's rollout (active or finished), None when it never had one; Rejected
        when its document is unreadable (written by hand, or by a newer version)."""
        key = self._keys.rollout(checked_name(model, "model"))
        raw = self._client.read_string(key)
        return None if raw is None else self._parsed(model, key, raw)

    @staticmethod
    def _parsed(model: str, key: str, raw: bytes | str) -> RolloutState:
        try:
            return RolloutState.from_json(raw)
        except SchemaError as exc:
            raise Unreadable(
                f"the rollout document of {model!r} ({key}) is unreadable: {exc}; set the rule"
                " by hand (gatectl route set) and remove it with gatectl rollout abort"
            ) from exc

    def models(self) -> list[str]:
        """Models with a rollout document, sorted."""
        return sorted(as_text(m) for m in self._client.read_set(self._keys.rollouts))

    def history(self, model: str, limit: int = 50) -> list[AuditEntry]:
        """The model's rollout decisions and operator actions, newest first."""
        return self._client.history(checked_name(model, "model"), limit, actions="rollout.")

    def start(self, plan: RolloutPlan | None, *, actor: str, baseline_from_rule: bool = False,
              allow_schema_change: bool = False, reason: str = "",
              **fields: Any) -> RolloutState:  # fmt: skip
        """Start a rollout and serve its first phase at once. `fields` build the plan when
        `plan` is None; with `baseline_from_rule` the baseline is the rule's heaviest version.
        Rejected when the model has an active rollout, no rule, a rule that already splits
        traffic among other versions, label gates it cannot pass (evaluation_gate), or a
        candidate that does not fit the baseline's callers (the schema gate: overridden by
        `allow_schema_change` with a `reason`, audited)."""
        model = checked_name(plan.model if plan is not None else str(fields["model"]), "model")
        rule = self._client.get_route(model)
        if rule is None:
            raise Rejected(f"model {model!r} has no rule: route it to its baseline first"
                           " (gatectl route set MODEL --split VERSION=100)")  # fmt: skip
        if plan is None:
            if baseline_from_rule:
                fields["baseline"] = max(rule.split, key=lambda s: s.weight).version
            try:
                plan = RolloutPlan(**fields).validate()
            except SchemaError as exc:
                raise Rejected(str(exc)) from exc
        else:
            try:
                plan.validate()
            except SchemaError as exc:
                raise Rejected(str(exc)) from exc
        refuse_unready_label_gates(self._client, plan)
        now = self._clock()
        first = RolloutState(
            plan=plan, status=SHADOWING if plan.shadow_first_seconds > 0 else PROGRESSING,
            step=-1 if plan.shadow_first_seconds > 0 else 0, started_at=now, started_by=actor,
            phase_started_at=now, route_revision=0, updated_at=now,
        )  # fmt: skip
        key = self._keys.rollout(model)

        def write(pipe: redis.client.Pipeline) -> RolloutState:
            raw = pipe.get(key)
            if raw is not None:
                existing = self._parsed(model, key, raw)
                if existing.active:
                    raise Rejected(
                        f"model {model!r} already has a rollout of version"
                        f" {existing.plan.candidate!r} ({existing.status}): abort it first"
                        " (gatectl rollout abort)"
                    )
            current, new = self._stage_rule(pipe, first, actor, None)
            if current is None:
                raise Rejected(f"model {model!r} has no rule any more")
            ours = (plan.baseline, plan.candidate)
            busy = [s.version for s in current.split if s.weight > 0 and s.version not in ours]
            if busy:
                raise Rejected(
                    f"the rule of {model!r} also sends traffic to {', '.join(busy)}: a rollout"
                    f" moves traffic from {plan.baseline!r} to {plan.candidate!r} only; route"
                    " the others' weight to the baseline first"
                )
            overridden = self._client.gate_versions(pipe, model, plan.baseline, [plan.candidate],
                                                    allow_schema_change, reason)  # fmt: skip
            stored = first.evolve(route_revision=new.revision)
            pipe.multi()
            pipe.set(key, stored.to_json())
            pipe.sadd(self._keys.rollouts, model)
            self._client.queue_route(pipe, current, new, actor, "route.set")
            self._client.queue_schema_override(pipe, actor, model, overridden, reason)
            self._client.audit(pipe, actor, "rollout.start", model, None,
                               {"plan": plan.to_dict(), **audit_view(stored)},
                               f"rollout of {plan.candidate} over {plan.baseline}")  # fmt: skip
            return stored

        return self._client.transaction(self._watched(first, rule), write, retry=True)

    def commit(
        self, before: RolloutState, after: RolloutState, *, actor: str, action: str,
        reason: str, route: bool, leader: str | None = None,
        expected_route_revision: int | None = None,
    ) -> RolloutState:  # fmt: skip
        """Store `after` in place of `before` (Conflict when the document changed meanwhile);
        with `route`, also the rule `after` serves, at expected_route_revision (default: the
        revision the rollout wrote last, so a rule changed by anyone else is a Conflict).
        `leader`: write only while the lease holds this value (leases.lease_value; else
        LeaseLost). An empty `action` writes no audit entry (a new interval's snapshot)."""
        model = before.plan.model
        key = self._keys.rollout(model)
        rule = self._client.get_route(model) if route else None
        watched = [key] + (self._watched(after, rule) if route else [])
        if leader is not None:
            watched.append(self._keys.rollout_leader)
        expected = before.route_revision if expected_route_revision is None else (
            expected_route_revision)  # fmt: skip

        def write(pipe: redis.client.Pipeline) -> RolloutState:
            raw = pipe.get(key)
            stored = None if raw is None else RolloutState.from_json(raw)
            if stored is None or stored.revision != before.revision:
                raise Conflict(f"the rollout of {model!r} changed meanwhile: read it again")
            if leader is not None and as_text(pipe.get(self._keys.rollout_leader)) != leader:
                raise LeaseLost(f"{lease_holder(leader)} no longer holds the rollout"
                                " controller's lease")  # fmt: skip
            new_state = after.evolve(revision=before.revision + 1, updated_at=self._clock())
            staged = None
            if route:
                staged = self._stage_rule(pipe, new_state, actor, expected)
                new_state = new_state.evolve(route_revision=staged[1].revision)
            pipe.multi()
            pipe.set(key, new_state.to_json())
            if staged is not None:
                self._client.queue_route(pipe, staged[0], staged[1], actor, "route.set")
            if action:
                self._client.audit(pipe, actor, f"rollout.{action}", model,
                                   audit_view(before), audit_view(new_state), reason)  # fmt: skip
            return new_state

        return self._client.transaction(watched, write, retry=False)

    def pause(self, model: str, *, actor: str, reason: str = "") -> RolloutState:
        state = self._active(model)
        if state.status == PAUSED:
            raise Rejected(f"the rollout of {model!r} is already paused")
        after = state.evolve(status=PAUSED, paused_status=state.status)
        return self.commit(state, after, actor=actor, action="pause", route=False,
                           reason=reason or f"paused by {actor}")  # fmt: skip

    def resume(self, model: str, *, actor: str, reason: str = "") -> RolloutState:
        """Resume at the step it paused at: its rule is served again (on top of any rule an
        operator wrote meanwhile) and the next interval is judged afresh."""
        state = self._active(model)
        if state.status != PAUSED:
            raise Rejected(f"the rollout of {model!r} is not paused ({state.status})")
        rule = self._client.get_route(model)
        now = self._clock()
        after = state.evolve(
            status=state.paused_status, paused_status="", failures=0, phase_started_at=now,
            interval_started_at=0.0, next_check_at=0.0, snapshot={}, labels_waiting_since=0.0,
        )  # fmt: skip
        return self.commit(
            state, after, actor=actor, action="resume", route=True,
            reason=reason or f"resumed by {actor}",
            expected_route_revision=None if rule is None else rule.revision,
        )  # fmt: skip

    def abort(self, model: str, *, actor: str, reason: str = "") -> RolloutState | None:
        """End it now: the baseline alone serves again, whatever the rule was. An unreadable
        document is removed instead (its baseline is unknown: the rule stays as it is), and
        None returned."""
        try:
            state = self._active(model)
        except Unreadable:
            self._remove_unreadable(model, actor, reason)
            return None
        rule = self._client.get_route(model)
        after = state.evolve(status=ABORTED, paused_status="")
        return self.commit(
            state, after, actor=actor, action="abort", route=True,
            reason=reason or f"aborted by {actor}",
            expected_route_revision=None if rule is None else rule.revision,
        )  # fmt: skip

    def _remove_unreadable(self, model: str, actor: str, reason: str) -> None:
        key = self._keys.rollout(model)

        def write(pipe: redis.client.Pipeline) -> None:
            raw = pipe.get(key)
            pipe.multi()
            pipe.delete(key)
            pipe.srem(self._keys.rollouts, model)
            self._client.audit(pipe, actor, "rollout.abort", model, as_text(raw), None,
                               reason or "unreadable rollout document removed")  # fmt: skip

        self._client.transaction([key], write, retry=True)

    def _active(self, model: str) -> RolloutState:
        state = self.get(model)
        if state is None:
            raise NotFound(f"model {model!r} has no rollout: start one with gatectl rollout start")
        if state.status not in ACTIVE:
            raise Rejected(f"the rollout of {model!r} has ended ({state.status})")
        return state

    def _watched(self, state: RolloutState, rule: RouteRule | None) -> list[str]:
        split, shadows = served_split(state, *_parts(rule))
        target = RouteRule(state.plan.model, split, shadows)
        return [self._keys.rollout(state.plan.model), *self._client.route_keys(target)]

    def _stage_rule(
        self, pipe: redis.client.Pipeline, state: RolloutState, actor: str,
        expected_revision: int | None,
    ) -> tuple[RouteRule | None, RouteRule]:  # fmt: skip
        raw = pipe.get(self._keys.route(state.plan.model))
        rule = None if raw is None else RouteRule.from_json(raw)
        split, served_shadows = served_split(state, *_parts(rule))
        target = RouteRule(state.plan.model, split, served_shadows,
                           reason=_route_reason(state))  # fmt: skip
        try:
            target.validate()
        except SchemaError as exc:
            raise Rejected(str(exc)) from exc
        return self._client.stage_route(pipe, target, actor, expected_revision)


def _parts(rule: RouteRule | None) -> tuple[tuple[Split, ...], tuple[Shadow, ...]]:
    return ((), ()) if rule is None else (rule.split, rule.shadows)


def _route_reason(state: RolloutState) -> str:
    plan = state.plan
    status = state.paused_status if state.status == PAUSED else state.status
    if status == SHADOWING:
        return f"rollout of {plan.candidate}: shadow {plan.shadow_percent:g}%"
    if status == PROGRESSING:
        return (f"rollout of {plan.candidate}: step {state.step + 1}/{len(plan.steps)},"
                f" {plan.steps[state.step]}%")  # fmt: skip
    return f"rollout of {plan.candidate}: {status.replace('_', ' ')}"
