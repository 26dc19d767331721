"""`gatectl accuracy`: a model's live quality from its joined labels, per version and role and,
with --segment, per segment value, with the label join's counts."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from registry_client.cli import fairness
from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.formatting import optional_number
from registry_client.cli.quality_window import (
    ALL_VALUES,
    PRIMARY,
    ROLES,
    TASK_METRICS,
    add_window_arguments,
    format_age,
    format_count,
    format_metric,
    read_quality_window,
)
from registry_client.cli.tables import print_table, printable
from registry_client.client import RegistryClient
from registry_client.quality.metrics import Metrics, delay_quantiles, metrics_of
from registry_client.schema import version_sort_key

__all__ = ["accuracy_report", "add_parsers", "print_accuracy"]


def _metrics(task: str, metrics: Metrics) -> Metrics:
    """Every metric computed, with the task's own present (None when undefined)."""
    return {name: None for name in TASK_METRICS[task]} | metrics


def accuracy_report(
    client: RegistryClient, model: str, since_seconds: float, version: str | None = None,
    role: str | None = None, segment: str | None = None, now: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Per (version, role) with labelled rows or logged predictions in the window: labelled
    rows, predictions logged, coverage, metrics and label delay; with `segment`, the same per
    value of that segment (coverage is not known per value: predictions are counted per
    version and role only). Each row's minutes are its predictions' minutes."""
    window = read_quality_window(client, model, since_seconds, now, segment)
    task = window.config.task
    pairs = [(v, r) for v, r in window.range.pairs() if version in (None, v) and role in (None, r)]
    if version is not None and not pairs:  # asked for, yet nothing labelled or logged
        pairs = [(window.check_version(version), role or PRIMARY)]
    pairs.sort(key=lambda p: (version_sort_key(p[0]), p[1] != PRIMARY))
    rows = []
    for v, r in pairs:
        quality = window.range.quality(v, r)
        row: dict[str, Any] = {
            "version": v, "role": r, "labelled": quality.labelled, "logged": quality.logged,
            "coverage": quality.coverage, "metrics": _metrics(task, quality.metrics),
            "label_delay_seconds": quality.delays or {"p50": None, "p90": None, "p99": None},
        }  # fmt: skip
        if segment is not None:
            row["segments"] = {
                value: {"labelled": state.n, "metrics": _metrics(task, metrics_of(state)),
                        "label_delay_seconds": delay_quantiles(state)}
                for value, state in sorted(window.range.segments(v, r, segment).items())
            }  # fmt: skip
        rows.append(row)
    return window.header() | {
        "segment": segment,
        "versions": rows,
        "join_counts": client.quality.counts(model),
    }


def print_accuracy(report: dict[str, Any], out: TextIO) -> None:
    """One row per version and role (and per segment value), then the join's counts."""
    columns = TASK_METRICS[report["task"]]
    segment = report["segment"]
    print(f"model {printable(report['model'])}  task {report['task']}  from {report['from']} to"
          f" {report['to']}  joiners {len(report['joiners'])}", file=out)  # fmt: skip
    header = ["version", "role", *([segment] if segment else []), "labelled", "logged",
              "coverage", *columns, "delay p50", "delay p90"]  # fmt: skip
    table: list[list[str]] = [header]
    for row in report["versions"]:
        coverage = None if row["coverage"] is None else 100.0 * row["coverage"]
        lines = [(ALL_VALUES, row, str(row["logged"]), optional_number(coverage, ".1f", "%"))]
        lines += [(value, found, "-", "-") for value, found in row.get("segments", {}).items()]
        for value, found, logged, shown_coverage in lines:
            delays = found["label_delay_seconds"]
            table.append([
                row["version"], row["role"], *([value] if segment else []),
                format_count(found["labelled"]), logged, shown_coverage,
                *(format_metric(name, found["metrics"].get(name)) for name in columns),
                format_age(delays["p50"]), format_age(delays["p90"]),
            ])  # fmt: skip
    print_table(table, out)
    if not report["versions"]:
        print("no labelled rows or logged predictions in the window", file=out)
    counts = report["join_counts"]
    shown = ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none yet"
    print(f"labels joined (all time, every joiner): {printable(shown)}", file=out)


def add_parsers(commands: Commands) -> None:
    """Add `accuracy` and `fairness` to gatectl's subcommands."""
    accuracy = commands.add_parser(
        "accuracy", help="live accuracy per version and role from the joined labels"
    )
    accuracy.add_argument("model")
    accuracy.add_argument("--version", help="only this version (default: every one)")
    accuracy.add_argument("--role", choices=ROLES, help="only this role (default: both)")
    add_window_arguments(accuracy)
    accuracy.add_argument("--segment", help="a row per value of this segment too")
    accuracy.set_defaults(handler=run_accuracy)
    fairness.add_parsers(commands)


def run_accuracy(args: argparse.Namespace, context: CommandContext) -> int:
    report = accuracy_report(context.client, args.model, args.since, args.version, args.role,
                             args.segment)  # fmt: skip
    if context.emit_json:
        print(json.dumps(report), file=context.out)
    else:
        print_accuracy(report, context.out)
    return EXIT_OK
