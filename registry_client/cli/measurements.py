"""`gatectl metrics add|history`: metrics measured on a version after its registration (a
later offline evaluation, a benchmark), appended with their source and audited."""

from __future__ import annotations

import argparse
import json

from registry_client.cli.arguments import name_value_pairs
from registry_client.cli.context import CommandContext, Commands
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
    add.set_defaults(handler=add_metrics)
    history = actions.add_parser("history", help="every measurement, oldest first")
    history.add_argument("model")
    history.add_argument("version")
    history.set_defaults(handler=metrics_history)


def add_metrics(args: argparse.Namespace, context: CommandContext) -> int:
    added = context.client.add_metrics(args.model, args.version, dict(args.values),
                                       source=args.source, actor=context.actor)  # fmt: skip
    if context.emit_json:
        print(json.dumps(added), file=context.out)
    else:
        values = " ".join(f"{k}={v:g}" for k, v in sorted(added["values"].items()))
        print(f"{printable(args.model)} version {printable(args.version)}: {values}"
              f" from {printable(added['source'])} at {added['at']}", file=context.out)  # fmt: skip
    return EXIT_OK


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
