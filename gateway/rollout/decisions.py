"""What a judged interval of a rollout leads to: hold, advance, promote or roll back.

Pure: the controller reads the statistics, has them judged and writes what this returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from registry_client.rollout.judge import FAIL, INSUFFICIENT, Check
from registry_client.rollout.plan import PROGRESSING, PROMOTED, ROLLED_BACK, SHADOWING, RolloutState

__all__ = ["Decision", "next_decision"]


class Decision(NamedTuple):
    decision: str  # hold, advance, promote or rollback
    reason: str
    after: RolloutState
    route: bool  # whether the rule served changes with it


def next_decision(
    state: RolloutState, checks: list[Check], now: float, fresh: Mapping[str, object]
) -> Decision:
    """What the judged interval leads to; `fresh` is the snapshot the next interval is
    measured from."""
    plan = state.plan
    # Since when the label checks have waited: kept while they still wait (or have failed for
    # waiting too long, so that every judgement after the bound fails too), else cleared.
    short_of_labels = any(c.waits_for_labels for c in checks)
    since = (state.labels_waiting_since or now) if short_of_labels else 0.0
    state = state.evolve(labels_waiting_since=since)
    restart = {"interval_started_at": now, "next_check_at": now + plan.interval_seconds,
               "snapshot": fresh}  # fmt: skip
    failed = [c for c in checks if c.result == FAIL]
    waiting = [c for c in checks if c.result == INSUFFICIENT]
    if failed:
        failures = state.failures + 1
        summary = "; ".join(_described(c) for c in failed)
        if failures >= plan.failures_to_rollback:
            after = state.evolve(status=ROLLED_BACK, failures=failures, **restart)
            reason = f"failed {failures} time(s) in a row: {summary}"
            return Decision("rollback", reason, after, True)
        reason = f"failed ({failures} of {plan.failures_to_rollback} before rollback): {summary}"
        return Decision("hold", reason, state.evolve(failures=failures, **restart), False)
    if waiting:  # the interval goes on, counted from the same start, until there is enough
        data = [c for c in waiting if not c.waits_for_labels]
        labels = [c for c in waiting if c.waits_for_labels]
        reason = "; ".join(
            f"waiting for {what}: " + "; ".join(_described(c) for c in found)
            for what, found in (("data", data), ("labels", labels))
            if found
        )
        after = state.evolve(next_check_at=now + plan.interval_seconds)
        return Decision("hold", reason, after, False)
    shadowing = state.status == SHADOWING
    if shadowing and now - state.phase_started_at < plan.shadow_first_seconds:
        left = plan.shadow_first_seconds - (now - state.phase_started_at)
        reason = f"checks passed; shadowing {left:.0f}s more"
        return Decision("hold", reason, state.evolve(failures=0, **restart), False)
    if shadowing or state.step < len(plan.steps) - 1:
        step = state.step + 1
        after = state.evolve(status=PROGRESSING, step=step, failures=0, phase_started_at=now,
                             **restart)  # fmt: skip
        reason = f"checks passed; step {step + 1}/{len(plan.steps)}: {plan.steps[step]}%"
        return Decision("advance", reason, after, True)
    after = state.evolve(status=PROMOTED, failures=0, phase_started_at=now, **restart)
    reason = f"checks passed at {plan.steps[-1]}%; {plan.candidate} serves alone"
    return Decision("promote", reason, after, True)


def _described(check: Check) -> str:
    value = "-" if check.value is None else f"{check.value:.4g}"
    return f"{check.name} {value} (want {check.threshold}; {check.detail})"
