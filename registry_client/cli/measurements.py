"""`gatectl metrics add|history`: metrics measured on a version after its registration (a
later offline evaluation, a benchmark), appended with their source and audited."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from registry_client.cli.arguments import name_value_pairs
from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.dry_run import add_dry_run_argument, field_changes
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.tables import print_table, printable

__all__ = ["add_parsers"]


def _measured(text: str) -> tuple[str, float]:
    pairs = name_value_pairs(text, "metric")
    if len(pairs) != 1:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}")
    name, value = pairs[0]
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: expected a number, got {value!r}") from None


def add_parsers(commands: Commands) -> None:
    """Add `metrics` to gatectl's subcommands."""
    metrics = commands.add_parser("metrics", help="metrics measured on a version over time")
    actions = metrics.add_subparsers(dest="metrics_action", required=True)
    add = actions.add_parser("add", help="append a measurement (the artifact is untouched)")
    add.add_argument("model")
    add.add_argument("version")
    add.add_argument("values", nargs="+", type=_measured, metavar="NAME=NUMBER")
    add.add_argument(
        "--source", required=True,
        help="where the numbers come from: an evaluation job, a dataset, a report",
    )  # fmt: skip
    add_dry_run_argument(add)
    add.set_defaults(handler=add_metrics)
    history = actions.add_parser("history", help="every measurement, oldest first")
    history.add_argument("model")
    history.add_argument("version")
    history.set_defaults(handler=metrics_history)


def add_metrics(args: argparse.Namespace, context: CommandContext) -> int:
    added = context.client.add_metrics(args.model, args.version, dict(args.values),
                                       source=args.source, actor=context.actor,
                                       dry_run=args.dry_run)  # fmt: skip
    if args.dry_run:
        return _show_planned(args, context, added)
    if context.emit_json:
        print(json.dumps(added), file=context.out)
    else:
        values = " ".join(f"{k}={v:g}" for k, v in sorted(added["values"].items()))
        print(f"{printable(args.model)} version {printable(args.version)}: {values}"
              f" from {printable(added['source'])} at {added['at']}", file=context.out)  # fmt: skip
    return EXIT_OK


def _show_planned(
    args: argparse.Namespace, context: CommandContext, measurement: dict[str, Any]
) -> int:
    """Each metric's latest measurement now, and the one it would be: a measurement always
    becomes the latest, so its source and time show even when the value stays. JSON:
    {"dry_run", "subject", "before", "after" (name -> {value, source, at} or null),
    "changes", "measurement"}."""
    latest = context.client.latest_metrics(args.model, args.version)
    before = {name: latest.get(name) for name in measurement["values"]}
    after = {name: {"value": value, "source": measurement["source"], "at": measurement["at"]}
             for name, value in measurement["values"].items()}  # fmt: skip
    lines = field_changes(_texts(before), _texts(after))
    subject = f"metrics of model {args.model} version {args.version}"
    if context.emit_json:
        print(json.dumps({"dry_run": True, "subject": subject, "before": before, "after": after,
                          "changes": lines, "measurement": measurement}),
              file=context.out)  # fmt: skip
        return EXIT_OK
    print(f"{printable(subject)}  (dry run: nothing written)", file=context.out)
    for line in lines:
        print(f"  {printable(line)}", file=context.out)
    return EXIT_OK


def _texts(latest: Mapping[str, Mapping[str, Any] | None]) -> dict[str, str | None]:
    return {name: None if m is None else f"{m['value']:g} ({m['source']}, {m['at']})"
            for name, m in latest.items()}  # fmt: skip


def metrics_history(args: argparse.Namespace, context: CommandContext) -> int:
    history = context.client.metrics_history(args.model, args.version)
    if context.emit_json:
        print(json.dumps(history), file=context.out)
        return EXIT_OK
    rows = [[m["at"], m["source"], m["by"],
             " ".join(f"{k}={v:g}" for k, v in sorted(m["values"].items()))]
            for m in history]  # fmt: skip
    print_table([["at", "source", "by", "values"], *rows], context.out)
    return EXIT_OK
