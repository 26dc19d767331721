"""`gatectl rollout start|status|pause|resume|abort|history`: progressive delivery from the
command line. It parses and prints (a rollout's status: rollout_status.py; what a --dry-run
of start, pause, resume or abort would change: rollout_dry_run.py); RolloutStore holds the
logic."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from dataclasses import replace
from typing import TextIO

from registry_client.cli.apply_wait import add_wait_arguments, show_and_wait
from registry_client.cli.arguments import add_schema_override_arguments, reason_text
from registry_client.cli.context import CommandContext, Commands, Handler
from registry_client.cli.dry_run import add_dry_run_argument
from registry_client.cli.durations import duration_argument, long_duration_argument
from registry_client.cli.exit_codes import EXIT_OK, EXIT_ROLLOUT_FAILED
from registry_client.cli.plotting import add_plot_argument, write_plot
from registry_client.cli.rollout_dry_run import show_planned_removal, show_planned_rollout
from registry_client.cli.rollout_status import print_status, status_view
from registry_client.cli.rollout_timeline import audited_state, timeline_picture
from registry_client.cli.tables import print_table, printable
from registry_client.cli.watching import Snapshot, add_watch_arguments, watch
from registry_client.errors import NotFound
from registry_client.records.leases import lease_holder
from registry_client.rollout.plan import ABORTED, PROMOTED, ROLLED_BACK, RolloutState
from registry_client.rollout.store import RolloutStore

__all__ = ["add_parsers", "print_status", "status_view"]

# The exit code of `rollout status --watch` when the rollout ends.
_WATCH_ENDS = {PROMOTED: EXIT_OK, ROLLED_BACK: EXIT_ROLLOUT_FAILED, ABORTED: EXIT_ROLLOUT_FAILED}


def _steps(text: str) -> tuple[int, ...]:
    # Named in argparse's message when int() refuses what isdigit() let through ('²').
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"--steps: expected percents such as 5,10,25,50,100,"
                                         f" got {text!r}")  # fmt: skip
    return tuple(int(p) for p in parts)


# `rollout start`'s plan: flag, type, default, help.
_PLAN_OPTIONS: tuple[tuple[str, Callable[[str], object], object, str], ...] = (
    ("--steps", _steps, (5, 10, 25, 50, 100),
     "the candidate's weight at each step, in percent (5,10,25,50,100)"),
    ("--interval", duration_argument, 300.0, "judged interval per step: 30s, 5m, 1h (5m)"),
    ("--shadow-first", duration_argument, 0.0,
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
    ("--max-auc-drop", float, None,
     "label gate: most the candidate's AUC-ROC may fall below the baseline's (multiclass:"
     " accuracy; regression: relative MAE rise); off by default"),
    ("--max-fairness-gap", float, None,
     "label gate: most fairness gap of the candidate across any segment's values; off"),
    ("--min-label-coverage", float, None,
     "label gate: least share of the candidate's predictions labelled before judging; off"),
    ("--min-labels", int, 500,
     "labelled predictions each side needs before the label gates judge (500)"),
    ("--label-wait", long_duration_argument, 3600.0,
     "how long a judgement waits for labels before it counts as failed (1h)"),
)  # fmt: skip


def add_parsers(commands: Commands) -> None:
    """Add `rollout` and its actions to gatectl's subcommands."""
    rollout = commands.add_parser(
        "rollout", help="progressive delivery: shift traffic to a candidate step by step"
    )
    actions = rollout.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="start a rollout; its first phase serves at once")
    start.add_argument("model")
    start.add_argument("--candidate", required=True, help="the version to roll out")
    start.add_argument("--baseline", help="the version it replaces (default: the rule's heaviest)")
    for flag, kind, default, text in _PLAN_OPTIONS:
        start.add_argument(flag, type=kind, default=default, help=text)
    start.add_argument("--require-evaluation", action="store_true",
                       help="refuse a candidate without an evaluation (gatectl evaluate) that"
                       " passes --max-fairness-gap and --max-auc-drop")  # fmt: skip
    add_schema_override_arguments(start)
    add_wait_arguments(start)
    add_dry_run_argument(start)
    start.set_defaults(handler=start_rollout)
    handlers: tuple[tuple[str, str, Handler], ...] = (
        ("status", "where a rollout is and its last checks", show_rollout),
        ("pause", "stop judging and moving; the current rule keeps serving", pause_rollout),
        ("resume", "go on from the paused step", resume_rollout),
        ("abort", "end it: the baseline alone serves again", abort_rollout),
        ("history", "its decisions and operators' actions", rollout_history),
    )
    for name, what, handler in handlers:
        action = actions.add_parser(name, help=what)
        action.add_argument("model")
        if name == "status":
            add_watch_arguments(action, "until the rollout ends: exit 0 promoted, 6 rolled back"
                                " or aborted")  # fmt: skip
            add_plot_argument(action, "the candidate's weight over time and each decision")
        if name in ("pause", "resume", "abort"):
            action.add_argument("--reason", type=reason_text, default="", help="why, for the audit")
        if name in ("resume", "abort"):  # they write the rule the rollout serves
            add_wait_arguments(action)
        if name in ("pause", "resume", "abort"):
            add_dry_run_argument(action)
        if name == "history":
            action.add_argument("--limit", type=int, default=20)
        action.set_defaults(handler=handler)


def start_rollout(args: argparse.Namespace, context: CommandContext) -> int:
    """Store the plan and write its first phase's rule; waits for the gateways to apply it."""
    state = RolloutStore(context.client).start(
        None, actor=context.actor, baseline_from_rule=args.baseline is None, model=args.model,
        candidate=args.candidate, steps=args.steps, interval_seconds=args.interval,
        shadow_first_seconds=args.shadow_first, shadow_percent=args.shadow_percent,
        min_agreement=args.min_agreement, max_error_rate_delta=args.max_error_rate_delta,
        max_p99_ratio=args.max_p99_ratio, min_p99_increase_ms=args.min_p99_increase_ms,
        max_psi=args.max_psi, min_requests=args.min_requests,
        failures_to_rollback=args.failures_to_rollback,
        require_evaluation=args.require_evaluation, max_auc_drop=args.max_auc_drop,
        max_fairness_gap=args.max_fairness_gap, min_label_coverage=args.min_label_coverage,
        min_labels=args.min_labels, label_wait_seconds=args.label_wait,
        allow_schema_change=args.allow_schema_change, reason=args.reason, dry_run=args.dry_run,
        **({} if args.baseline is None else {"baseline": args.baseline}),
    )  # fmt: skip
    if args.dry_run:
        return show_planned_rollout(context, state, route=True)
    return _show(context, state, args.wait)


def show_rollout(args: argparse.Namespace, context: CommandContext) -> int:
    if not args.watch:
        state = _rollout(context, args.model)
        code = _show(context, state, None)
        if args.plot is not None:
            write_plot(args.plot, timeline_picture(context.client, state), context.err)
        return code

    def read() -> Snapshot:
        state = _rollout(context, args.model)
        text = io.StringIO()
        _show(replace(context, out=text), state, None)
        return text.getvalue(), _WATCH_ENDS.get(state.status)

    return watch(read, context.out, args.interval)


def _rollout(context: CommandContext, model: str) -> RolloutState:
    state = RolloutStore(context.client).get(model)
    if state is None:
        raise NotFound(f"model {model!r} has no rollout: start one with gatectl rollout start")
    return state


def pause_rollout(args: argparse.Namespace, context: CommandContext) -> int:
    state = RolloutStore(context.client).pause(args.model, actor=context.actor,
                                               reason=args.reason,
                                               dry_run=args.dry_run)  # fmt: skip
    if args.dry_run:
        return show_planned_rollout(context, state, route=False)
    return _show(context, state, None)


def resume_rollout(args: argparse.Namespace, context: CommandContext) -> int:
    state = RolloutStore(context.client).resume(args.model, actor=context.actor,
                                                reason=args.reason,
                                                dry_run=args.dry_run)  # fmt: skip
    if args.dry_run:
        return show_planned_rollout(context, state, route=True)
    return _show(context, state, args.wait)


def abort_rollout(args: argparse.Namespace, context: CommandContext) -> int:
    """End the rollout; its rule goes back to the baseline alone. A rollout document that
    cannot be read is removed, and the rule left as it is."""
    state = RolloutStore(context.client).abort(args.model, actor=context.actor,
                                               reason=args.reason,
                                               dry_run=args.dry_run)  # fmt: skip
    if args.dry_run:
        return (show_planned_removal(context, args.model) if state is None
                else show_planned_rollout(context, state, route=True))  # fmt: skip
    if state is None:
        print(f"removed the unreadable rollout document of {printable(args.model)}; its rule"
              " is as it was: check it with gatectl route show", file=context.out)  # fmt: skip
        return EXIT_OK
    return _show(context, state, args.wait)


def rollout_history(args: argparse.Namespace, context: CommandContext) -> int:
    entries = RolloutStore(context.client).history(args.model, args.limit)
    if context.emit_json:
        print(json.dumps(entries), file=context.out)
    else:
        _print_history(entries, context.out)
    return EXIT_OK


def _show(context: CommandContext, state: RolloutState, wait_seconds: float | None) -> int:
    """Print the rollout's status; after a write of its rule (`wait_seconds` not None), wait
    for the live gateways to apply it. Returns the exit code."""
    client = context.client
    leader = client.read_string(client.keys.rollout_leader)
    view = status_view(
        state, "" if leader is None else lease_holder(leader.decode(errors="replace"))
    )
    return show_and_wait(client, state.plan.model, state.route_revision, wait_seconds, view,
                         lambda to: print_status(view, to), context.out, context.err,
                         emit_json=context.emit_json)  # fmt: skip


def _print_history(entries: list[dict[str, str]], out: TextIO) -> None:
    rows = [["when", "who", "action", "status", "weight", "reason"]]
    for e in entries:
        after = audited_state(e.get("after", ""))
        rows.append([e.get("when", ""), e.get("who", ""), e.get("action", ""),
                     str(after.get("status", "")), str(after.get("weight", "")),
                     e.get("reason", "")])  # fmt: skip
    print_table(rows, out)
