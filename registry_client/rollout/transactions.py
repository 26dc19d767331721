"""The writes of rollout documents, each one WATCH/MULTI transaction with the rule the rollout
serves: every check is made inside the WATCH, the writes are queued after MULTI. With
`dry_run` the transaction ends after the checks (no MULTI), so a dry run is refused exactly
as the write would be, compare-and-set conflicts included, and writes nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from registry_client.client import RegistryClient
from registry_client.connection import Pipeline
from registry_client.errors import Conflict, Rejected
from registry_client.records.leases import lease_holder
from registry_client.records.rule_documents import RouteRule, Shadow, Split
from registry_client.records.values import as_text
from registry_client.rollout.plan import PAUSED, PROGRESSING, SHADOWING, RolloutState, served_split
from registry_client.schema import SchemaError

__all__ = ["LeaseLost", "RolloutWrites", "Unreadable", "audit_view", "parsed", "served_rule"]


class LeaseLost(Conflict):
    """The controller writing a decision no longer holds the leader lease."""


class Unreadable(Rejected):
    """A stored rollout document that cannot be read."""


def audit_view(state: RolloutState) -> dict[str, Any]:
    """What the audit keeps of a rollout: where it is and why, not its counters."""
    return {"candidate": state.plan.candidate, "baseline": state.plan.baseline,
            "status": state.status, "step": state.step, "weight": state.candidate_weight,
            "failures": state.failures, "checks": list(state.last_checks)}  # fmt: skip


def parsed(model: str, key: str, raw: bytes | str) -> RolloutState:
    """The stored document `raw` of `model`'s rollout; Unreadable saying what to do."""
    try:
        return RolloutState.from_json(raw)
    except SchemaError as exc:
        raise Unreadable(
            f"the rollout document of {model!r} ({key}) is unreadable: {exc}; set the rule"
            " by hand (gatectl route set) and remove it with gatectl rollout abort"
        ) from exc


def served_rule(state: RolloutState, rule: RouteRule | None) -> RouteRule:
    """The rule `state`'s phase serves over `rule` (not validated, no revision yet)."""
    split, shadows = served_split(state, *_parts(rule))
    return RouteRule(state.plan.model, split, shadows, reason=_route_reason(state))


class RolloutWrites:
    """The transactions that store rollout documents, through a RegistryClient's pool."""

    def __init__(self, client: RegistryClient, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._keys = client.keys
        self._clock = clock

    def start(
        self, first: RolloutState, rule: RouteRule, *, actor: str, allow_schema_change: bool,
        reason: str, dry_run: bool = False,
    ) -> RolloutState:  # fmt: skip
        """Store `first` and the rule it serves over the model's rule (read as `rule` before:
        a change meanwhile retries the checks). Rejected while another rollout is active,
        when the rule is gone, splits traffic to other versions, or the schema gate refuses."""
        plan, model = first.plan, first.plan.model
        key = self._keys.rollout(model)

        def write(pipe: Pipeline) -> RolloutState:
            raw = pipe.get(key)
            if raw is not None:
                existing = parsed(model, key, raw)
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
            if dry_run:  # no MULTI: the transaction ends with the checks
                return stored
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
        expected_route_revision: int | None = None, dry_run: bool = False,
    ) -> RolloutState:  # fmt: skip
        """RolloutStore.commit's transaction (its docstring says what it checks)."""
        model = before.plan.model
        key = self._keys.rollout(model)
        rule = self._client.get_route(model) if route else None
        watched = [key] + (self._watched(after, rule) if route else [])
        if leader is not None:
            watched.append(self._keys.rollout_leader)
        expected = before.route_revision if expected_route_revision is None else (
            expected_route_revision)  # fmt: skip

        def write(pipe: Pipeline) -> RolloutState:
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
            if dry_run:
                return new_state
            pipe.multi()
            pipe.set(key, new_state.to_json())
            if staged is not None:
                self._client.queue_route(pipe, staged[0], staged[1], actor, "route.set")
            if action:
                self._client.audit(pipe, actor, f"rollout.{action}", model,
                                   audit_view(before), audit_view(new_state), reason)  # fmt: skip
            return new_state

        return self._client.transaction(watched, write, retry=False)

    def remove_unreadable(self, model: str, actor: str, reason: str, dry_run: bool) -> None:
        """Delete the model's rollout document, whatever it holds (audited)."""
        key = self._keys.rollout(model)

        def write(pipe: Pipeline) -> None:
            raw = pipe.get(key)
            if dry_run:
                return
            pipe.multi()
            pipe.delete(key)
            pipe.srem(self._keys.rollouts, model)
            self._client.audit(pipe, actor, "rollout.abort", model, as_text(raw), None,
                               reason or "unreadable rollout document removed")  # fmt: skip

        self._client.transaction([key], write, retry=True)

    def _watched(self, state: RolloutState, rule: RouteRule | None) -> list[str]:
        target = served_rule(state, rule)
        return [self._keys.rollout(state.plan.model), *self._client.route_keys(target)]

    def _stage_rule(
        self, pipe: Pipeline, state: RolloutState, actor: str,
        expected_revision: int | None,
    ) -> tuple[RouteRule | None, RouteRule]:  # fmt: skip
        raw = pipe.get(self._keys.route(state.plan.model))
        target = served_rule(state, None if raw is None else RouteRule.from_json(raw))
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
