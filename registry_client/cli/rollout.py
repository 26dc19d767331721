"""`gatectl rollout start|status|pause|resume|abort|history`: progressive delivery from the
command line. It parses and prints; RolloutStore holds the logic."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from registry_client.cli.apply_wait import add_wait_arguments, show_and_wait
from registry_client.cli.tables import print_table, printable
from registry_client.client import RegistryClient
from registry_client.errors import NotFound
from registry_client.rollout.plan import RolloutState
from registry_client.rollout.store import RolloutStore, lease_holder

__all__ = ["add_rollout_parser", "run_rollout_command"]


def _steps(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"--steps: expected percents such as 5,10,25,50,100,"
                                         f" got {text!r}")  # fmt: skip
    return tuple(int(p) for p in parts)


def add_rollout_parser(
    commands: Any, duration: Callable[[str], float], reason: Callable[[str], str]
) -> None:
    """Add `rollout` and its actions to gatectl's subcommands; `duration` parses 30s/5m/2h,
    `reason` checks a --reason."""
    rollout = commands.add_parser(
        "rollout", help="progressive delivery: shift traffic to a candidate step by step"
    )
    actions = rollout.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="start a rollout; its first phase serves at once")
    start.add_argument("model")
    start.add_argument("--candidate", required=True, help="the version to roll out")
    start.add_argument("--baseline", help="the version it replaces (default: the rule's heaviest)")
    options: tuple[tuple[str, Callable[[str], object], object, str], ...] = (
        ("--steps", _steps, (5, 10, 25, 50, 100),
         "the candidate's weight at each step, in percent (5,10,25,50,100)"),
        ("--interval", duration, 300.0, "judged interval per step: 30s, 5m, 1h (5m)"),
        ("--shadow-first", duration, 0.0,
         "first mirror traffic to the candidate this long (dark launch)"),
        ("--shadow-percent", float, 100.0, "share of requests mirrored while shadowing (100)"),
        ("--min-agreement", float, 0.98,
         "while shadowing: least share of rows whose class agrees (0.98)"),
        ("--max-error-rate-delta", float, 0.5,
         "most percentage points of errors above the baseline's, per gRPC status (0.5)"),
        ("--max-p99-ratio", float, 1.2, "most p99 latency as a multiple of the baseline's (1.2)"),
        ("--min-p99-increase-ms", float, 1.0, "a p99 slower by at most this never fails (1)"),
        ("--max-psi", float, 0.25,
         "most PSI of any input or output feature against the baseline's (0.25)"),
        ("--min-requests", int, 500,
         "requests each side needs in an interval before it is judged (500)"),
        ("--failures-to-rollback", int, 2, "failed intervals in a row that roll back (2)"),
    )  # fmt: skip
    for flag, kind, default, text in options:
        start.add_argument(flag, type=kind, default=default, help=text)
    add_wait_arguments(start)
    for name, what in (("status", "where a rollout is and its last checks"),
                       ("pause", "stop judging and moving; the current rule keeps serving"),
                       ("resume", "go on from the paused step"),
                       ("abort", "end it: the baseline alone serves again"),
                       ("history", "its decisions and operators' actions")):  # fmt: skip
        action = actions.add_parser(name, help=what)
        action.add_argument("model")
        if name in ("pause", "resume", "abort"):
            action.add_argument("--reason", type=reason, default="", help="why, for the audit")
        if name in ("resume", "abort"):  # they write the rule the rollout serves
            add_wait_arguments(action)
        if name == "history":
            action.add_argument("--limit", type=int, default=20)


def run_rollout_command(
    args: argparse.Namespace, client: RegistryClient, actor: str, out: TextIO, err: TextIO
) -> int:
    """Run `gatectl rollout ACTION`; returns the exit code (that of the wait for the rule it
    wrote, when it wrote one)."""
    store = RolloutStore(client)
    wrote_rule = args.action in ("start", "resume", "abort")
    if args.action == "start":
        state = store.start(
            None, actor=actor, baseline_from_rule=args.baseline is None, model=args.model,
            candidate=args.candidate, steps=args.steps, interval_seconds=args.interval,
            shadow_first_seconds=args.shadow_first, shadow_percent=args.shadow_percent,
            min_agreement=args.min_agreement, max_error_rate_delta=args.max_error_rate_delta,
            max_p99_ratio=args.max_p99_ratio, min_p99_increase_ms=args.min_p99_increase_ms,
            max_psi=args.max_psi, min_requests=args.min_requests,
            failures_to_rollback=args.failures_to_rollback,
            **({} if args.baseline is None else {"baseline": args.baseline}),
        )  # fmt: skip
    elif args.action == "history":
        entries = store.history(args.model, args.limit)
        if args.json:
            print(json.dumps(entries), file=out)
        else:
            _print_history(entries, out)
        return 0
    elif args.action == "pause":
        state = store.pause(args.model, actor=actor, reason=args.reason)
    elif args.action == "resume":
        state = store.resume(args.model, actor=actor, reason=args.reason)
    elif args.action == "abort":
        aborted = store.abort(args.model, actor=actor, reason=args.reason)
        if aborted is None:
            print(f"removed the unreadable rollout document of {printable(args.model)}; its rule"
                  " is as it was: check it with gatectl route show", file=out)  # fmt: skip
            return 0
        state = aborted
    else:
        found = store.get(args.model)
        if found is None:
            raise NotFound(f"model {args.model!r} has no rollout: start one with gatectl"
                           " rollout start")  # fmt: skip
        state = found
    leader = client.read_string(client.keys.rollout_leader)
    view = status_view(
        state, "" if leader is None else lease_holder(leader.decode(errors="replace"))
    )
    wait = args.wait if wrote_rule else None
    return show_and_wait(client, state.plan.model, state.route_revision, wait, view,
                         lambda to: print_status(view, to), out, err,
                         emit_json=args.json)  # fmt: skip


def status_view(state: RolloutState, leader: str, now: float | None = None) -> dict[str, Any]:
    """What `rollout status` shows, as JSON."""
    now = time.time() if now is None else now
    plan = state.plan
    return {
        "model": plan.model, "candidate": plan.candidate, "baseline": plan.baseline,
        "status": state.status, "paused_status": state.paused_status,
        "step": state.step + 1, "steps": list(plan.steps),
        "candidate_weight": state.candidate_weight,
        "started_at": _iso(state.started_at), "started_by": state.started_by,
        "interval_seconds": plan.interval_seconds,
        "shadow_first_seconds": plan.shadow_first_seconds,
        "failures": state.failures, "failures_to_rollback": plan.failures_to_rollback,
        "next_check_in_seconds": (max(state.next_check_at - now, 0.0)
                                  if state.active and state.next_check_at else None),
        "route_revision": state.route_revision, "leader": leader,
        "last_decision": dict(state.last_decision), "checks": [dict(c) for c in state.last_checks],
        "plan": plan.to_dict(),
    }  # fmt: skip


def _iso(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat(timespec="seconds")


def _seconds(value: float) -> str:
    if value >= 3600 and value % 3600 == 0:
        return f"{value / 3600:g}h"
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g}m"
    return f"{value:g}s"


def print_status(view: dict[str, Any], out: TextIO) -> None:
    steps = view["steps"]
    if view["step"] == 0:  # the shadow phase, before the first step
        where = f"shadow phase (then {steps[0]}%)"
    else:
        where = f"step {view['step']}/{len(steps)}"
    status = view["status"] + (f" (from {view['paused_status']})" if view["paused_status"] else "")
    print(f"model {printable(view['model'])}  candidate {printable(view['candidate'])}  baseline"
          f" {printable(view['baseline'])}  status {printable(status)}", file=out)  # fmt: skip
    print(f"{where}  candidate weight {view['candidate_weight']}%  steps"
          f" {','.join(map(str, steps))}  interval {_seconds(view['interval_seconds'])}"
          f"  failures {view['failures']} of {view['failures_to_rollback']}", file=out)  # fmt: skip
    next_check = view["next_check_in_seconds"]
    when = "" if next_check is None else f"  next check in {next_check:.0f}s"
    print(f"started {view['started_at']} by {printable(view['started_by'])}  leader"
          f" {printable(view['leader'] or '-')}  rule revision {view['route_revision']}{when}",
          file=out)  # fmt: skip
    decision = view["last_decision"]
    if decision:
        print(f"last decision {_iso(decision['at'])} {printable(decision['decision'])}:"
              f" {printable(decision['reason'])}", file=out)  # fmt: skip
    if view["checks"]:
        rows = [["check", "result", "value", "threshold", "detail"]]
        for c in view["checks"]:
            value = "-" if c["value"] is None else f"{c['value']:.4g}"
            rows.append([c["name"], c["result"], value, c["threshold"], c["detail"]])
        print_table(rows, out)


def _audited_state(after: str) -> dict[str, Any]:
    """An audit entry's `after` as a rollout's audit view; {} when it is not one (an entry
    written by another tool)."""
    try:
        found = json.loads(after) if after else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _print_history(entries: list[dict[str, str]], out: TextIO) -> None:
    rows = [["when", "who", "action", "status", "weight", "reason"]]
    for e in entries:
        after = _audited_state(e.get("after", ""))
        rows.append([e.get("when", ""), e.get("who", ""), e.get("action", ""),
                     str(after.get("status", "")), str(after.get("weight", "")),
                     e.get("reason", "")])  # fmt: skip
    print_table(rows, out)
