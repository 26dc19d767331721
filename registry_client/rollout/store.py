"""Rollouts in Redis: one document per model (`{ns}:rollout:{model}`), changed only together
with the rule it serves, in one transaction, audited (`rollout.*` entries next to the
`route.set` they cause) like every registry write.

RolloutStore reads them and holds what operators and the controller do with them; the
transactions themselves are in transactions.py. Every write takes `dry_run`: every check is
made as for the write (compare-and-set conflicts included) and the state it would store is
returned, but nothing is written."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from registry_client.client import AuditEntry, RegistryClient
from registry_client.errors import NotFound, Rejected
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
)
from registry_client.rollout.transactions import (
    LeaseLost,
    RolloutWrites,
    Unreadable,
    audit_view,
    parsed,
)
from registry_client.schema import SchemaError

__all__ = ["LeaseLost", "RolloutStore", "Unreadable", "audit_view"]


class RolloutStore:
    """Reads and writes rollout documents through a RegistryClient's pool."""

    def __init__(self, client: RegistryClient, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._keys = client.keys
        self._clock = clock
        self._writes = RolloutWrites(client, clock)

    def get(self, model: str) -> RolloutState | None:
        """The model's rollout (active or finished), None when it never had one; Rejected
        when its document is unreadable (written by hand, or by a newer version)."""
        key = self._keys.rollout(checked_name(model, "model"))
        raw = self._client.read_string(key)
        return None if raw is None else parsed(model, key, raw)

    def models(self) -> list[str]:
        """Models with a rollout document, sorted."""
        return sorted(as_text(m) for m in self._client.read_set(self._keys.rollouts))

    def history(self, model: str, limit: int = 50) -> list[AuditEntry]:
        """The model's rollout decisions and operator actions, newest first."""
        return self._client.history(checked_name(model, "model"), limit, actions="rollout.")

    def start(self, plan: RolloutPlan | None, *, actor: str, baseline_from_rule: bool = False,
              allow_schema_change: bool = False, reason: str = "", dry_run: bool = False,
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
        if plan is None and baseline_from_rule:
            fields["baseline"] = max(rule.split, key=lambda s: s.weight).version
        try:
            plan = (RolloutPlan(**fields) if plan is None else plan).validate()
        except SchemaError as exc:
            raise Rejected(str(exc)) from exc
        refuse_unready_label_gates(self._client, plan)
        now = self._clock()
        first = RolloutState(
            plan=plan, status=SHADOWING if plan.shadow_first_seconds > 0 else PROGRESSING,
            step=-1 if plan.shadow_first_seconds > 0 else 0, started_at=now, started_by=actor,
            phase_started_at=now, route_revision=0, updated_at=now,
        )  # fmt: skip
        return self._writes.start(first, rule, actor=actor, reason=reason, dry_run=dry_run,
                                  allow_schema_change=allow_schema_change)  # fmt: skip

    def commit(
        self, before: RolloutState, after: RolloutState, *, actor: str, action: str,
        reason: str, route: bool, leader: str | None = None,
        expected_route_revision: int | None = None, dry_run: bool = False,
    ) -> RolloutState:  # fmt: skip
        """Store `after` in place of `before` (Conflict when the document changed meanwhile);
        with `route`, also the rule `after` serves, at expected_route_revision (default: the
        revision the rollout wrote last, so a rule changed by anyone else is a Conflict).
        `leader`: write only while the lease holds this value (leases.lease_value; else
        LeaseLost). An empty `action` writes no audit entry (a new interval's snapshot)."""
        return self._writes.commit(
            before, after, actor=actor, action=action, reason=reason, route=route,
            leader=leader, expected_route_revision=expected_route_revision, dry_run=dry_run,
        )  # fmt: skip

    def pause(
        self, model: str, *, actor: str, reason: str = "", dry_run: bool = False
    ) -> RolloutState:
        state = self._active(model)
        if state.status == PAUSED:
            raise Rejected(f"the rollout of {model!r} is already paused")
        after = state.evolve(status=PAUSED, paused_status=state.status)
        return self.commit(state, after, actor=actor, action="pause", route=False,
                           reason=reason or f"paused by {actor}", dry_run=dry_run)  # fmt: skip

    def resume(
        self, model: str, *, actor: str, reason: str = "", dry_run: bool = False
    ) -> RolloutState:
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
            reason=reason or f"resumed by {actor}", dry_run=dry_run,
            expected_route_revision=None if rule is None else rule.revision,
        )  # fmt: skip

    def abort(
        self, model: str, *, actor: str, reason: str = "", dry_run: bool = False
    ) -> RolloutState | None:
        """End it now: the baseline alone serves again, whatever the rule was. An unreadable
        document is removed instead (its baseline is unknown: the rule stays as it is), and
        None returned."""
        try:
            state = self._active(model)
        except Unreadable:
            self._writes.remove_unreadable(model, actor, reason, dry_run)
            return None
        rule = self._client.get_route(model)
        after = state.evolve(status=ABORTED, paused_status="")
        return self.commit(
            state, after, actor=actor, action="abort", route=True,
            reason=reason or f"aborted by {actor}", dry_run=dry_run,
            expected_route_revision=None if rule is None else rule.revision,
        )  # fmt: skip

    def _active(self, model: str) -> RolloutState:
        state = self.get(model)
        if state is None:
            raise NotFound(f"model {model!r} has no rollout: start one with gatectl rollout start")
        if state.status not in ACTIVE:
            raise Rejected(f"the rollout of {model!r} has ended ({state.status})")
        return state
