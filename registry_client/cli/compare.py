"""`gatectl compare`: the versions of one model side by side (the report is
registry_client.reports.comparison's), then each one's difference from the baseline with its
95% interval, as a data scientist reads a canary or a shadow before promoting it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

from registry_client.charts.figures import latency_histograms
from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.durations import duration_argument, format_duration
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.formatting import optional_number
from registry_client.cli.plotting import add_plot_argument, write_plot
from registry_client.cli.quality_window import (
    HEADLINE_METRICS,
    format_age,
    format_count,
    format_metric,
)
from registry_client.cli.tables import print_table, printable
from registry_client.records.measurements import REGISTRATION_SOURCE
from registry_client.reports.comparison import REVISION, compare_versions

__all__ = ["SIGNIFICANT", "add_parsers", "interval_cell", "print_comparison", "rank_cell"]

SIGNIFICANT = "*"  # marks an interval that excludes zero


def add_parsers(commands: Commands) -> None:
    """Add `compare` to gatectl's subcommands."""
    compare = commands.add_parser(
        "compare",
        help="versions side by side: share, errors, latency, agreement, metrics, and each"
        " one's difference from the baseline",
    )
    compare.add_argument("model")
    compare.add_argument("versions", nargs="*", help="only these versions (default: all)")
    compare.add_argument(
        "--since", type=duration_argument, default=None,
        help="how far back: 30s, 15m, 2h, 1d, every rule revision of it (default: since the"
        " current rule revision took effect, its traffic only)",
    )  # fmt: skip
    add_plot_argument(compare, "each version's latency histogram, side by side")
    compare.set_defaults(handler=run_compare)


def run_compare(args: argparse.Namespace, context: CommandContext) -> int:
    report = compare_versions(context.client, args.model, args.versions, args.since)
    if context.emit_json:
        print(json.dumps(report), file=context.out)
    else:
        print_comparison(report, context.out)
    if args.plot is not None:
        several = _several_revisions(report["versions"])
        buckets = {_series(row, several): {int(k): v for k, v in row["latency_buckets"].items()}
                   for row in report["versions"]}  # fmt: skip
        window = (f"rule revision {report['rule_revision']}" if report["scope"] == REVISION
                  else f"last {format_duration(report['since_seconds'])}")  # fmt: skip
        title = f"Latency of {report['model']}'s versions, {window}"
        write_plot(args.plot, latency_histograms(title, buckets), context.err)
    return EXIT_OK


def _several_revisions(rows: Sequence[Mapping[str, Any]]) -> bool:
    return len({row["revision"] for row in rows}) > 1


def _series(row: Mapping[str, Any], several: bool) -> str:
    if not several:
        return f"{row['version']} ({row['role']})"
    return f"{row['version']} ({row['role']}, revision {_revision(row['revision'])})"


def _revision(revision: int | None) -> str:
    return "unknown" if revision is None else str(revision)


def _heading(report: Mapping[str, Any]) -> str:
    """What the comparison covers: a rule revision since it took effect, or a window."""
    model, replicas = printable(report["model"]), len(report["replicas"])
    revision, since = report["rule_revision"], report["since_seconds"]
    if report["scope"] != REVISION:
        return (f"model {model}  rule revision {revision}  from {report['from']} to"
                f" {report['to']}  replicas {replicas}")  # fmt: skip
    took_effect = report["revision_took_effect_at"]
    if took_effect is None:
        return (f"model {model}  rule revision {revision} (when it took effect is not"
                f" recorded): its traffic of the last {format_duration(since)}  replicas"
                f" {replicas}")  # fmt: skip
    age = (
        datetime.fromisoformat(report["to"]) - datetime.fromisoformat(took_effect)
    ).total_seconds()
    older = "" if since >= age - 1 else f" (its statistics of the last {format_duration(since)})"
    return (f"model {model}  since rule revision {revision} took effect at {took_effect},"
            f" {format_age(max(age, 0.0))} ago{older}  replicas {replicas}")  # fmt: skip


def print_comparison(report: dict[str, Any], out: TextIO) -> None:
    """The comparison as aligned tables: one row per version, role (and rule revision when
    several are shown), then each row's difference from its baseline."""
    print(_heading(report), file=out)
    if report.get("unknown_revision_requests"):
        print(f"{report['unknown_revision_requests']} requests counted by gateways that do not"
              " record the rule revision are left out (--since shows them)", file=out)  # fmt: skip
    rows = report["versions"]
    several = _several_revisions(rows)
    metric_names = sorted({name for row in rows for name in row["metrics"]})
    live_names = HEADLINE_METRICS.get(report.get("quality_task") or "", ())
    header = ["version", "role", *(["revision"] if several else []), "rule", "share",
              "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "agreement", "mean |diff|",
              *metric_names, *(f"live {name}" for name in live_names),
              *(["labelled", "coverage"] if live_names else [])]  # fmt: skip
    table = [header]
    for row in rows:
        latency = row["latency_ms"]
        error_percent = None if row["error_rate"] is None else 100 * row["error_rate"]
        table.append([
            row["version"], row["role"], *([_revision(row["revision"])] if several else []),
            optional_number(row["rule_percent"], ".4g", "%"),
            optional_number(row["observed_percent"], ".1f", "%"), str(row["requests"]),
            optional_number(error_percent, ".2f", "%"),
            *(optional_number(latency[q], ".2f") for q in ("p50", "p90", "p99")),
            optional_number(row["agreement"], ".4f"), optional_number(row["mean_abs_diff"], ".3g"),
            *[_metric_cell(row, name) for name in metric_names],
            *_live_cells(row, live_names),
        ])  # fmt: skip
    print_table(table, out)
    _print_differences(rows, several, out)


def _print_differences(rows: Sequence[Mapping[str, Any]], several: bool, out: TextIO) -> None:
    """Each row against its baseline, with 95% intervals; nothing when no row has one."""
    compared = [row for row in rows if row.get("difference")]
    if not compared:
        return
    print(f"\ndifference from the baseline (95% intervals, {SIGNIFICANT}: excludes 0; rank test:"
          " Mann-Whitney U)", file=out)  # fmt: skip
    table = [["version", "role", *(["revision"] if several else []), "baseline", "errors",
              "p50 ms", "p90 ms", "p99 ms", "rank test"]]  # fmt: skip
    for row in compared:
        found = row["difference"]
        latency = found["latency_ms"]
        table.append([
            row["version"], row["role"], *([_revision(row["revision"])] if several else []),
            found["against"], interval_cell(found["error_rate_points"], " pts"),
            *(interval_cell(latency[q]) for q in ("p50", "p90", "p99")),
            rank_cell(found["latency_rank_test"]),
        ])  # fmt: skip
    print_table(table, out)


def interval_cell(found: Mapping[str, Any] | None, unit: str = "") -> str:
    """`+0.30 pts [-0.10, +0.71]`, marked when the interval excludes zero."""
    if found is None:
        return "-"
    values = (found["estimate"], found["low"], found["high"])
    spec = "+.2f" if max(abs(v) for v in values) >= 1 else "+.3f"
    estimate, low, high = (format(v, spec) for v in values)
    marker = f" {SIGNIFICANT}" if found["significant"] else ""
    return f"{estimate}{unit} [{low}, {high}]{marker}"


def rank_cell(found: Mapping[str, Any] | None) -> str:
    """The rank test's p-value, and which side is slower when it is significant."""
    if found is None:
        return "-"
    p_value = "p<0.001" if found["p_value"] < 0.001 else f"p={found['p_value']:.2g}"
    if not found["significant"]:
        return p_value
    side = "slower" if found["probability_slower"] > 0.5 else "faster"
    return f"{side} {p_value} {SIGNIFICANT}"


def _metric_cell(row: Mapping[str, Any], name: str) -> str:
    """The latest value, and where it came from unless the version was registered with it."""
    cell = optional_number(row["metrics"].get(name), ".4g")
    source = row["metric_sources"].get(name, {}).get("source", REGISTRATION_SOURCE)
    return cell if source == REGISTRATION_SOURCE else f"{cell} ({printable(source)})"


def _live_cells(row: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    if not names:
        return []
    live = row["quality"]
    coverage = None if live["coverage"] is None else 100.0 * live["coverage"]
    return [*(format_metric(name, live["metrics"][name]) for name in names),
            format_count(live["labelled"]), optional_number(coverage, ".1f", "%")]  # fmt: skip
