"""`gatectl route show|set|history|status|rollback`: a model's rule (which versions serve
which share, which are mirrored), its audit trail and which gateway serves which revision."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any, TextIO

from registry_client.cli.apply_wait import add_wait_arguments, show_and_wait
from registry_client.cli.arguments import (
    REASON_HELP,
    add_schema_override_arguments,
    name_value_pairs,
    reason_text,
)
from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.dry_run import add_dry_run_argument
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.rule_diff import changes, routing
from registry_client.cli.tables import print_table, printable
from registry_client.cli.watching import Snapshot, add_watch_arguments, watch
from registry_client.errors import Rejected
from registry_client.records.rule_documents import MAX_WEIGHT, RouteRule, Shadow, Split

__all__ = ["add_parsers"]


def _split(text: str) -> list[Split]:
    out = []
    for version, weight in name_value_pairs(text, "--split"):
        try:
            out.append(Split(version, int(weight)))
        except ValueError:  # not digits, or more than int() converts
            raise argparse.ArgumentTypeError(
                f"--split: weight of {version!r} must be an integer from 0 to {MAX_WEIGHT}"
            ) from None
    return out


def _shadows(text: str) -> list[Shadow]:
    out = []
    for version, percent in name_value_pairs(text, "--shadow"):
        try:
            out.append(Shadow(version, float(percent)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--shadow: percent of {version!r} must be a number"
            ) from None
    return out


def add_parsers(commands: Commands) -> None:
    """Add `route` and its actions to gatectl's subcommands."""
    route = commands.add_parser("route", help="show, change, audit or roll back a rule")
    actions = route.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="the model's rule: versions, weights, shadows")
    show.add_argument("model")
    show.set_defaults(handler=show_rule)
    change = actions.add_parser(
        "set", help="write a new rule (compare-and-set) and wait for the gateways to apply it"
    )
    change.add_argument("model")
    change.add_argument(
        "--split",
        type=_split,
        required=True,
        help=f"VERSION=WEIGHT,... (weights 0 to {MAX_WEIGHT})",
    )
    change.add_argument("--shadow", type=_shadows, default=[], help="VERSION=PERCENT,...")
    change.add_argument("--no-sticky", action="store_true", help="random split even with a key")
    change.add_argument("--reason", type=reason_text, default="", help=REASON_HELP)
    change.add_argument("--expected-revision", type=int, help="write only at this revision")
    add_schema_override_arguments(change, reason=False)
    add_wait_arguments(change)
    add_dry_run_argument(change)
    change.set_defaults(handler=set_rule)
    history = actions.add_parser("history", help="the rule's past revisions, who and why")
    history.add_argument("model")
    history.add_argument("--limit", type=int, default=20, help="newest revisions shown (20)")
    history.set_defaults(handler=rule_history)
    status = actions.add_parser("status", help="which gateway serves which revision")
    status.add_argument("model")
    add_watch_arguments(status, "until interrupted (Ctrl-C)")
    status.set_defaults(handler=rule_status)
    rollback = actions.add_parser("rollback", help="write an earlier revision's routing again")
    rollback.add_argument("model")
    rollback.add_argument("--to-revision", type=int, required=True,
                          help="the revision whose routing to write again")  # fmt: skip
    rollback.add_argument("--reason", type=reason_text, default="", help=REASON_HELP)
    rollback.add_argument("--expected-revision", type=int, help="write only at this revision")
    add_schema_override_arguments(rollback, reason=False)
    add_wait_arguments(rollback)
    add_dry_run_argument(rollback)
    rollback.set_defaults(handler=roll_back_rule)


def _rule_view(rule: RouteRule) -> dict[str, Any]:
    view: dict[str, Any] = json.loads(rule.to_json())
    return view


def _print_rule(rule: RouteRule, out: TextIO) -> None:
    total = sum(s.weight for s in rule.split)
    print(f"model {printable(rule.model)}  revision {rule.revision}  sticky {rule.sticky}",
          file=out)  # fmt: skip
    rows: list[list[object]] = [
        [s.version, "split", s.weight, f"{100 * s.weight / total:.1f}%"] for s in rule.split
    ]
    rows += [[s.version, "shadow", "-", f"{s.percent:g}% mirrored"] for s in rule.shadows]
    print_table([["version", "role", "weight", "share"], *rows], out)
    print(f"updated by {printable(rule.updated_by)} at {printable(rule.updated_at)}:"
          f" {printable(rule.reason)}", file=out)  # fmt: skip


def _show_and_wait(args: argparse.Namespace, context: CommandContext, rule: RouteRule) -> int:
    """Print the rule just written and wait for the live gateways to apply it (--wait)."""
    return show_and_wait(context.client, rule.model, rule.revision, args.wait, _rule_view(rule),
                         lambda to: _print_rule(rule, to), context.out, context.err,
                         emit_json=context.emit_json)  # fmt: skip


def show_rule(args: argparse.Namespace, context: CommandContext) -> int:
    shown = context.client.get_route(args.model)
    if shown is None:
        raise Rejected(f"model {args.model!r} has no rule: set one with gatectl route set")
    if context.emit_json:
        print(json.dumps(_rule_view(shown)), file=context.out)
    else:
        _print_rule(shown, context.out)
    return EXIT_OK


def set_rule(args: argparse.Namespace, context: CommandContext) -> int:
    before = context.client.get_route(args.model) if args.dry_run else None
    rule = context.client.set_route(
        args.model, args.split, args.shadow, actor=context.actor, reason=args.reason,
        sticky=not args.no_sticky, expected_revision=args.expected_revision,
        allow_schema_change=args.allow_schema_change, dry_run=args.dry_run,
    )  # fmt: skip
    if args.dry_run:
        return _show_dry_run(context, before, rule)
    return _show_and_wait(args, context, rule)


def roll_back_rule(args: argparse.Namespace, context: CommandContext) -> int:
    """Write the rule as it was at --to-revision again, as a new revision."""
    before = context.client.get_route(args.model) if args.dry_run else None
    rule = context.client.rollback(args.model, args.to_revision, actor=context.actor,
                                   reason=args.reason,
                                   expected_revision=args.expected_revision,
                                   allow_schema_change=args.allow_schema_change,
                                   dry_run=args.dry_run)  # fmt: skip
    if args.dry_run:
        return _show_dry_run(context, before, rule)
    return _show_and_wait(args, context, rule)


def _show_dry_run(context: CommandContext, before: RouteRule | None, after: RouteRule) -> int:
    """What the write checked and would write; nothing was."""
    if context.emit_json:
        shown = {"dry_run": True, "before": None if before is None else _rule_view(before),
                 "after": _rule_view(after)}  # fmt: skip
        print(json.dumps(shown), file=context.out)
        return EXIT_OK
    was = "no rule" if before is None else f"revision {before.revision}"
    print(f"model {printable(after.model)}  {was} -> revision {after.revision}"
          "  (dry run: nothing written)", file=context.out)  # fmt: skip
    for line in changes(routing(before), routing(after) or {}) or ["no routing change"]:
        print(f"  {printable(line)}", file=context.out)
    return EXIT_OK


def _audited_revision(after: str) -> object:
    """The revision in an audit entry's `after` (a rule document), "" when there is none."""
    try:
        document = json.loads(after) if after else {}
    except ValueError:  # an entry written by another tool
        return "?"
    return document.get("revision", "") if isinstance(document, dict) else "?"


def rule_history(args: argparse.Namespace, context: CommandContext) -> int:
    entries = context.client.history(args.model, limit=args.limit)
    if context.emit_json:
        print(json.dumps(entries), file=context.out)
        return EXIT_OK
    rows = [[e.get("when", ""), e.get("who", ""), e.get("action", ""),
             _audited_revision(e.get("after", "")), e.get("reason", "")]
            for e in entries]  # fmt: skip
    print_table([["when", "who", "action", "revision", "reason"], *rows], context.out)
    return EXIT_OK


def _version_state(state: dict[str, Any]) -> str:
    """`2:LOADING(35s)`, `1:READY(41MiB)`, `3:FAILED`: one version on one replica."""
    text = f"{state['version']}:{state['state']}"
    if state["state"] == "LOADING" and state["loading_seconds"] is not None:
        return f"{text}({state['loading_seconds']:.0f}s)"
    if state["state"] == "READY" and state["memory_bytes"] is not None:
        return f"{text}({state['memory_bytes'] / 2**20:.0f}MiB)"
    return text


def rule_status(args: argparse.Namespace, context: CommandContext) -> int:
    """Each live gateway's heartbeat for the model: the revision it serves, the one it is
    loading, its versions' states and what failed; with --watch, again at each change."""

    def read() -> Snapshot:
        return _status_text(context, args.model), None

    if args.watch:
        return watch(read, context.out, args.interval)
    context.out.write(read()[0])
    return EXIT_OK


def _status_text(context: CommandContext, model: str) -> str:
    report = context.client.replica_status(model)
    out = io.StringIO()
    if context.emit_json:
        print(json.dumps(report), file=out)
        return out.getvalue()
    print(f"model {printable(model)}  rule revision {report['revision']}", file=out)
    rows = [
        [r["replica"], r["applied_revision"], r["target_revision"] or "-",
         " ".join(_version_state(v) for v in r["version_states"]),
         "; ".join(f"{v}: {why}" for v, why in r["failed"].items()) or r["error"] or "-"]
        for r in report["replicas"]
    ]  # fmt: skip
    print_table([["replica", "applied", "working towards", "versions", "problems"], *rows], out)
    return out.getvalue()
