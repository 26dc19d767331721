"""What `gatectl rollout status` shows of a rollout: the view (its JSON form) and the text it
prints (the plan, where it is, the last decision and the checks behind it)."""

from __future__ import annotations

import time
from typing import Any, TextIO

from registry_client.cli.durations import format_duration
from registry_client.cli.formatting import iso_time, optional_number
from registry_client.cli.tables import print_table, printable
from registry_client.rollout.plan import RolloutState

__all__ = ["print_status", "status_view"]


def status_view(state: RolloutState, leader: str, now: float | None = None) -> dict[str, Any]:
    """What `rollout status` shows, as JSON."""
    now = time.time() if now is None else now
    plan = state.plan
    return {
        "model": plan.model, "candidate": plan.candidate, "baseline": plan.baseline,
        "status": state.status, "paused_status": state.paused_status,
        "step": state.step + 1, "steps": list(plan.steps),
        "candidate_weight": state.candidate_weight,
        "started_at": iso_time(state.started_at), "started_by": state.started_by,
        "interval_seconds": plan.interval_seconds,
        "shadow_first_seconds": plan.shadow_first_seconds,
        "failures": state.failures, "failures_to_rollback": plan.failures_to_rollback,
        "next_check_in_seconds": (max(state.next_check_at - now, 0.0)
                                  if state.active and state.next_check_at else None),
        "route_revision": state.route_revision, "leader": leader,
        "last_decision": dict(state.last_decision), "checks": [dict(c) for c in state.last_checks],
        "plan": plan.to_dict(),
        "labels_waiting_since": (iso_time(state.labels_waiting_since)
                                 if state.labels_waiting_since else None),
        "labels_waited_seconds": (max(now - state.labels_waiting_since, 0.0)
                                  if state.labels_waiting_since and state.active else None),
    }  # fmt: skip


def print_status(view: dict[str, Any], out: TextIO) -> None:
    """status_view() as `rollout status` prints it: the plan, where it is, the last decision
    and the checks behind it."""
    steps = view["steps"]
    if view["step"] == 0:  # the shadow phase, before the first step
        where = f"shadow phase (then {steps[0]}%)"
    else:
        where = f"step {view['step']}/{len(steps)}"
    status = view["status"] + (f" (from {view['paused_status']})" if view["paused_status"] else "")
    print(f"model {printable(view['model'])}  candidate {printable(view['candidate'])}  baseline"
          f" {printable(view['baseline'])}  status {printable(status)}", file=out)  # fmt: skip
    print(f"{where}  candidate weight {view['candidate_weight']}%  steps"
          f" {','.join(map(str, steps))}  interval {format_duration(view['interval_seconds'])}"
          f"  failures {view['failures']} of {view['failures_to_rollback']}", file=out)  # fmt: skip
    next_check = view["next_check_in_seconds"]
    when = "" if next_check is None else f"  next check in {next_check:.0f}s"
    print(f"started {view['started_at']} by {printable(view['started_by'])}  leader"
          f" {printable(view['leader'] or '-')}  rule revision {view['route_revision']}{when}",
          file=out)  # fmt: skip
    decision = view["last_decision"]
    if decision:
        print(f"last decision {iso_time(decision['at'])} {printable(decision['decision'])}:"
              f" {printable(decision['reason'])}", file=out)  # fmt: skip
    waited = view.get("labels_waited_seconds")
    if waited is not None:  # the coverage so far and needed, the wait so far and its bound
        coverage = next((c for c in view["checks"] if c["name"] == "label_coverage"), None)
        found = "" if coverage is None else (
            f": label_coverage {optional_number(coverage['value'], '.4g')} (want"
            f" {coverage['threshold']})")  # fmt: skip
        bound = format_duration(view["plan"]["label_wait_seconds"])
        print(f"waiting for labels since {view['labels_waiting_since']}"
              f" ({format_duration(round(waited))} of {bound}){found}", file=out)  # fmt: skip
    if view["checks"]:
        rows = [["check", "result", "value", "threshold", "detail"]]
        for c in view["checks"]:
            value = optional_number(c["value"], ".4g")
            rows.append([c["name"], c["result"], value, c["threshold"], c["detail"]])
        print_table(rows, out)
