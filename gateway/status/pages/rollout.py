"""/status/models/<model>/rollout: where the rollout is, its timeline of candidate weight and
decisions, the checks of its last judgement and, for every step, each judgement's checks and
values as the audit recorded them."""

from __future__ import annotations

from typing import Any

from gateway.status.pages.html import Cell, e, figure, number, table
from registry_client.cli.rollout_timeline import audited_state

__all__ = ["rollout_body"]

_CHECK_HEADER = ["check", "result", "value", "threshold", "detail"]


def rollout_body(view: dict[str, Any], svg: str, history: tuple[dict[str, str], ...]) -> str:
    steps = view["steps"]
    where = "shadow phase" if view["step"] == 0 else f"step {view['step']} of {len(steps)}"
    status = view["status"] + (f" (from {view['paused_status']})" if view["paused_status"] else "")
    facts = [
        ("candidate", view["candidate"]),
        ("baseline", view["baseline"]),
        ("status", status),
        ("where", where),
        ("candidate weight", f"{view['candidate_weight']}%"),
        ("steps", ", ".join(f"{s}%" for s in steps)),
        ("interval", f"{view['interval_seconds']:g}s"),
        ("failures", f"{view['failures']} of {view['failures_to_rollback']}"),
        ("started", f"{view['started_at']} by {view['started_by']}"),
        ("controller", view["leader"] or "-"),
        ("rule revision", view["route_revision"]),
        (
            "next check in",
            "-"
            if view["next_check_in_seconds"] is None
            else f"{view['next_check_in_seconds']:.0f}s",
        ),
    ]
    parts = [table("The rollout", ["field", "value"], [[e(k), e(v)] for k, v in facts])]
    parts.append(figure(svg, "Candidate weight over time, with each decision."))
    decision = view["last_decision"]
    if decision:
        parts.append(
            f"<p>Last decision: <strong>{e(decision['decision'])}</strong>:"
            f" {e(decision['reason'])}</p>"
        )
    parts.append(
        table(
            "Checks of the last judgement",
            _CHECK_HEADER,
            [_check(c) for c in view["checks"]],
            numeric=(2,),
        )
    )
    parts.append("<h2>Timeline</h2>")
    parts.append(_timeline(history, view["started_at"]))
    return "".join(parts)


def _check(check: dict[str, Any]) -> list[Cell]:
    result = str(check.get("result", ""))
    return [
        e(check.get("name", "")),
        f'<span class="{e(_result_class(result))}">{e(result)}</span>',
        number(check.get("value"), ".4g"),
        e(check.get("threshold", "")),
        e(check.get("detail", "")),
    ]


def _result_class(result: str) -> str:
    return {"pass": "ok", "fail": "alert"}.get(result, "warn")


def _timeline(history: tuple[dict[str, str], ...], started_at: str) -> str:
    """This rollout's audit entries, oldest first: each decision and the checks behind it."""
    rows = []
    for entry in reversed(history):
        if entry.get("when", "")[:19] < started_at[:19]:
            continue  # an earlier rollout's
        after = audited_state(entry.get("after", ""))
        checks = "; ".join(
            f"{c.get('name', '')} {c.get('result', '')} ({_value(c.get('value'))} vs"
            f" {c.get('threshold', '')})"
            for c in after.get("checks", [])
            if isinstance(c, dict)
        )
        rows.append(
            [
                e(entry.get("when", "")),
                e(entry.get("action", "")),
                e(after.get("status", "")),
                e(after.get("step", "")),
                e(f"{after['weight']}%" if "weight" in after else ""),
                e(entry.get("who", "")),
                e(entry.get("reason", "")),
                e(checks or "-"),
            ]
        )
    return table(
        "Each step and judgement, oldest first",
        ["when", "action", "status", "step", "weight", "who", "reason", "checks"],
        rows,
    )


def _value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
