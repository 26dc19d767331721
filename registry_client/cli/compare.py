"""`gatectl compare`: the versions of one model side by side, as a data scientist judges a
canary or a shadow before promoting it: role and traffic share, requests, error rate, latency
quantiles, agreement with the primary, the metrics registered with each version and, for a
model with a quality config, the live ones from the labels joined over the same window."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any, TextIO

from registry_client.charts.figures import latency_histograms
from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.durations import duration_argument, format_duration
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.formatting import iso_now, iso_time, optional_number
from registry_client.cli.plotting import add_plot_argument, write_plot
from registry_client.cli.quality_window import HEADLINE_METRICS, format_count, format_metric
from registry_client.cli.tables import print_table, printable
from registry_client.client import RegistryClient
from registry_client.errors import NotFound, Rejected
from registry_client.quality.report import QualityRange, minutes_of, read_range
from registry_client.records.measurements import REGISTRATION_SOURCE
from registry_client.records.rule_documents import RouteRule
from registry_client.schema import version_sort_key
from registry_client.stats.store import MergedStats
from registry_client.stats.window import WINDOW_SECONDS, Comparison, VersionStats

__all__ = ["add_parsers", "compare_versions", "print_comparison"]

PRIMARY, SHADOW = "primary", "shadow"


def add_parsers(commands: Commands) -> None:
    """Add `compare` to gatectl's subcommands."""
    compare = commands.add_parser(
        "compare", help="versions side by side: share, errors, latency, agreement, metrics"
    )
    compare.add_argument("model")
    compare.add_argument("versions", nargs="*", help="only these versions (default: all)")
    compare.add_argument(
        "--since", type=duration_argument, default=900.0,
        help="how far back: 30s, 15m, 2h, 1d (15m)",
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
        buckets = {f"{row['version']} ({row['role']})": {int(k): v for k, v in
                                                         row["latency_buckets"].items()}
                   for row in report["versions"]}  # fmt: skip
        title = (f"Latency of {report['model']}'s versions, last"
                 f" {format_duration(args.since)}")  # fmt: skip
        write_plot(args.plot, latency_histograms(title, buckets), context.err)
    return EXIT_OK


def _rule_share(rule: RouteRule | None, version: str, role: str) -> float | None:
    """The share the current rule gives the version in that role, in percent."""
    if rule is None:
        return None
    if role == SHADOW:
        return next((s.percent for s in rule.shadows if s.version == version), None)
    total = sum(s.weight for s in rule.split)
    weight = next((s.weight for s in rule.split if s.version == version), None)
    return None if weight is None or not total else 100.0 * weight / total


def _ms(stats: VersionStats, q: float) -> float | None:
    value = stats.quantile(q)
    return None if value is None else value * 1000.0


def _row(stats: VersionStats, primary_requests: int, rule: RouteRule | None,
         metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """`primary_requests`: the model's primary requests in the minutes this row counts."""
    rows = sum(c.rows for c in stats.comparisons.values())
    agreeing = sum(c.agreeing_rows for c in stats.comparisons.values())
    elements = sum(c.elements for c in stats.comparisons.values())
    diff_sum = sum(c.abs_diff_sum for c in stats.comparisons.values())
    return {
        "version": stats.version,
        "role": stats.role,
        "rule_percent": _rule_share(rule, stats.version, stats.role),
        "observed_percent": 100.0 * stats.requests / primary_requests if primary_requests else None,
        "requests": stats.requests,
        "errors": dict(stats.errors),
        "error_rate": stats.error_count / stats.requests if stats.requests else None,
        "latency_ms": {f"p{round(q * 100)}": _ms(stats, q) for q in (0.5, 0.9, 0.99)},
        # Requests per log-spaced latency bucket (the gateways' own; bucket i's upper edge is
        # 25 us x 2^((i + 1) / 8)): what --plot draws, and enough for any quantile.
        "latency_buckets": {str(k): v for k, v in sorted(stats.latency_buckets.items())},
        "agreement": agreeing / rows if rows else None,
        "compared_rows": rows,
        "mean_abs_diff": diff_sum / elements if elements else None,
        "max_abs_diff": max((c.max_abs_diff for c in stats.comparisons.values()), default=None),
        "comparisons": [
            _comparison(c)
            for c in sorted(stats.comparisons.values(), key=lambda c: (c.primary, c.output))
        ],
        "metrics": {name: m["value"] for name, m in metrics.items()},
        "metric_sources": {
            name: {"source": m["source"], "at": m["at"]} for name, m in metrics.items()
        },
    }


class _ShareBase:
    """The model's primary requests a row's share is taken of: all of them for a primary;
    for a shadow, those in the minutes it was mirrored, not before it was."""

    def __init__(self, merged: MergedStats) -> None:
        self._merged = merged
        self._primary_by_window: dict[int, int] = {}
        for (_, role), counts in merged.requests_by_window.items():
            if role == PRIMARY:
                for window, count in counts.items():
                    self._primary_by_window[window] = self._primary_by_window.get(window, 0) + count

    def of(self, version: str, role: str) -> int:
        if role != SHADOW:
            return sum(self._primary_by_window.values())
        windows = self._merged.requests_by_window.get((version, role), {})
        return sum(self._primary_by_window.get(window, 0) for window in windows)


def _comparison(compared: Comparison) -> dict[str, Any]:
    return {
        "primary": compared.primary,
        "output": compared.output,
        "rows": compared.rows,
        "agreement": compared.agreement,
        "mean_abs_diff": compared.mean_abs_diff,
        "max_abs_diff": compared.max_abs_diff,
    }


def compare_versions(
    client: RegistryClient, model: str, versions: Sequence[str], since_seconds: float
) -> dict[str, Any]:
    """Merged statistics of the last `since_seconds` for the model's versions (all of them
    that served or that the rule names, or the ones asked for)."""
    info = client.show_model(model)
    registered = info["versions"]
    unknown = [v for v in versions if v not in registered]
    if unknown:
        raise NotFound(f"model {model!r} has no version {', '.join(map(repr, unknown))}"
                       f" (registered: {', '.join(registered) or 'none'})")  # fmt: skip
    rule = client.get_route(model)
    merged = client.stats.read(model, since_seconds)
    by_key = dict(merged.by_version)
    if rule is not None:  # versions the rule names are listed even before any traffic
        for split in rule.split:
            by_key.setdefault((split.version, PRIMARY), VersionStats(split.version, PRIMARY))
        for shadow in rule.shadows:
            by_key.setdefault((shadow.version, SHADOW), VersionStats(shadow.version, SHADOW))
    wanted = set(versions) or set(registered) | {v for v, _ in by_key}
    for version in set(versions) - {v for v, _ in by_key}:  # asked for, yet idle
        by_key[version, "-"] = VersionStats(version, "-")
    base = _ShareBase(merged)
    ordered = sorted(by_key.items(), key=lambda item: (item[0][1] != PRIMARY,
                                                       version_sort_key(item[0][0])))  # fmt: skip
    rows = [
        _row(stats, base.of(version, role), rule, _registered_metrics(client, model, version))
        for (version, role), stats in ordered
        if version in wanted
    ]
    # An unreadable config is shown by `model show`; compare still answers without it.
    task = info["quality"].get("task") if isinstance(info.get("quality"), dict) else None
    if task in HEADLINE_METRICS:
        live = read_range(client.quality, client.predictions, model,
                          *minutes_of(since_seconds, time.time()))  # fmt: skip
        for row in rows:
            row["quality"] = _live_quality(live, task, row["version"], row["role"])
    return {
        "model": model,
        "since_seconds": since_seconds,
        "from": iso_time(merged.first_window * WINDOW_SECONDS),
        "to": iso_now(),
        "rule_revision": None if rule is None else rule.revision,
        "replicas": sorted(merged.replicas),
        "unreadable_windows": merged.unreadable,
        "quality_task": task if task in HEADLINE_METRICS else None,
        "versions": rows,
    }


def _live_quality(live: QualityRange, task: str, version: str, role: str) -> dict[str, Any]:
    """The task's headline metrics from the labels joined to the predictions of the window
    (a version asked for yet idle, role "-": none), with the label coverage."""
    quality = live.quality(version, role)
    return {
        "labelled": quality.labelled, "logged": quality.logged, "coverage": quality.coverage,
        "metrics": {name: quality.metrics.get(name) for name in HEADLINE_METRICS[task]},
    }  # fmt: skip


def _registered_metrics(
    client: RegistryClient, model: str, version: str
) -> dict[str, dict[str, Any]]:
    """Each metric's latest measurement (value, source, at): registered or added since."""
    try:
        return client.latest_metrics(model, version)
    except NotFound:
        return {}  # statistics outlive a version's registration
    except ValueError as exc:
        raise Rejected(f"version {version!r} has unreadable metrics: {exc}") from exc


def print_comparison(report: dict[str, Any], out: TextIO) -> None:
    """The comparison as an aligned table, one row per version and role."""
    print(
        f"model {printable(report['model'])}  rule revision {report['rule_revision']}  from"
        f" {report['from']} to {report['to']}  replicas {len(report['replicas'])}",
        file=out,
    )
    metric_names = sorted({name for row in report["versions"] for name in row["metrics"]})
    live_names = HEADLINE_METRICS.get(report.get("quality_task") or "", ())
    header = ["version", "role", "rule", "share", "requests", "errors", "p50 ms", "p90 ms",
              "p99 ms", "agreement", "mean |diff|", *metric_names,
              *(f"live {name}" for name in live_names),
              *(["labelled", "coverage"] if live_names else [])]  # fmt: skip
    table = [header]
    for row in report["versions"]:
        latency = row["latency_ms"]
        error_percent = None if row["error_rate"] is None else 100 * row["error_rate"]
        table.append([
            row["version"], row["role"], optional_number(row["rule_percent"], ".4g", "%"),
            optional_number(row["observed_percent"], ".1f", "%"), str(row["requests"]),
            optional_number(error_percent, ".2f", "%"),
            *(optional_number(latency[q], ".2f") for q in ("p50", "p90", "p99")),
            optional_number(row["agreement"], ".4f"), optional_number(row["mean_abs_diff"], ".3g"),
            *[_metric_cell(row, name) for name in metric_names],
            *_live_cells(row, live_names),
        ])  # fmt: skip
    print_table(table, out)


def _metric_cell(row: dict[str, Any], name: str) -> str:
    """The latest value, and where it came from unless the version was registered with it."""
    cell = optional_number(row["metrics"].get(name), ".4g")
    source = row["metric_sources"].get(name, {}).get("source", REGISTRATION_SOURCE)
    return cell if source == REGISTRATION_SOURCE else f"{cell} ({printable(source)})"


def _live_cells(row: dict[str, Any], names: Sequence[str]) -> list[str]:
    if not names:
        return []
    live = row["quality"]
    coverage = None if live["coverage"] is None else 100.0 * live["coverage"]
    return [*(format_metric(name, live["metrics"][name]) for name in names),
            format_count(live["labelled"]), optional_number(coverage, ".1f", "%")]  # fmt: skip
