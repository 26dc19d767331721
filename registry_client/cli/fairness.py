"""`gatectl fairness`: how a version's live quality differs across the values of one segment
(per value rates, then the group-fairness figures naming the worst value), optionally beside a
second version's over the same window and predictions' minutes."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.formatting import optional_number
from registry_client.cli.quality_window import (
    PRIMARY,
    ROLES,
    SHADOW,
    QualityWindow,
    add_window_arguments,
    format_count,
    format_metric,
    read_quality_window,
)
from registry_client.cli.tables import print_table, printable
from registry_client.client import RegistryClient
from registry_client.errors import Rejected
from registry_client.quality.metrics import metrics_of

__all__ = ["add_parsers", "fairness_report_of", "print_fairness"]

# Per value: a binary model's rates (fairness.segment_rates), the others' metrics.
VALUE_METRICS = {
    "binary": ("selection_rate", "tpr", "fpr", "precision", "accuracy", "auc_roc"),
    "multiclass": ("accuracy", "macro_f1"),
    "regression": ("mae", "rmse", "bias"),
}
_HEADERS = {"selection_rate": "selection", "tpr": "TPR", "fpr": "FPR", "auc_roc": "AUC",
            "mae": "MAE", "rmse": "RMSE"}  # fmt: skip
# A binary model's figures, each with the FairnessReport field naming its worst value.
_BINARY_FIGURES = (
    ("demographic_parity_difference", "demographic_parity_worst"),
    ("demographic_parity_ratio", "demographic_parity_worst"),
    ("equal_opportunity_difference", "equal_opportunity_worst"),
    ("equalized_odds_difference", "equalized_odds_worst"),
)
# The other tasks' one figure, as registry_client.quality.fairness.fairness_gap names it.
_GAP_FIGURES = {"multiclass": "accuracy_difference", "regression": "mae_difference"}


def _default_version(client: RegistryClient, window: QualityWindow, role: str | None,
                     dimension: str) -> str:  # fmt: skip
    """The rule's version with the largest weight (its first shadow with --role shadow); with
    no rule, the only version with labelled rows in that segment in the role (primary unless
    --role says)."""
    rule = client.get_route(window.model)
    if rule is not None and role == SHADOW and rule.shadows:
        return rule.shadows[0].version
    if rule is not None and role != SHADOW and rule.split:
        return max(rule.split, key=lambda s: s.weight).version
    found = sorted({v for v, r, d, _ in window.range.states
                    if d == dimension and r == (role or PRIMARY)})  # fmt: skip
    if len(found) == 1:
        return found[0]
    raise Rejected(f"--version: expected one, as no rule names a version to default to"
                   f" (versions with labelled rows as {role or PRIMARY}:"
                   f" {', '.join(found) or 'none'})")  # fmt: skip


def _side(window: QualityWindow, version: str, role: str, dimension: str,
          min_rows: float) -> dict[str, Any]:  # fmt: skip
    """One version's per-value figures and the fairness figures across the values."""
    task, found = window.config.task, window.range
    four_fifths: bool | None = None
    try:
        if task == "binary":
            report = found.fairness(version, role, dimension, min_rows)
            values = {} if report is None else {v: dict(r) for v, r in report.rates.items()}
            excluded = [] if report is None else list(report.excluded)
            figures = {name: {"value": None if report is None else getattr(report, name),
                              "worst": None if report is None else getattr(report, worst)}
                       for name, worst in _BINARY_FIGURES}  # fmt: skip
            four_fifths = None if report is None else report.four_fifths_ok
        else:
            states = found.segments(version, role, dimension)
            included = {v: s for v, s in sorted(states.items()) if s.n >= min_rows}
            excluded = sorted(set(states) - set(included))
            values = {v: {name: metrics_of(s).get(name) for name in VALUE_METRICS[task]}
                      | {"n": s.n} for v, s in included.items()}  # fmt: skip
            gap = found.fairness_gap(version, role, dimension, min_rows)
            figures = {_GAP_FIGURES[task]: {"value": None if gap is None else gap[1],
                                            "worst": None if gap is None else gap[2]}}  # fmt: skip
    except ValueError as exc:  # states of two tasks in the window: the model's task changed
        raise Rejected(
            f"--since: version {version!r} segment {dimension!r}: {exc}; the"
            " model's task changed within the window, pick a shorter one"
        ) from exc
    return {
        "version": version, "role": role, "rows": sum(v["n"] or 0.0 for v in values.values()),
        "values": values, "excluded": excluded, "figures": figures,
        "four_fifths_ok": four_fifths,
    }  # fmt: skip


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _differences(side: dict[str, Any], against: dict[str, Any]) -> dict[str, Any]:
    """`side` minus `against`, per value present in both and per figure."""
    theirs = against["values"]
    return {
        "values": {
            value: {name: _minus(rates[name], theirs[value].get(name))
                    for name in rates if name != "n"}
            for value, rates in side["values"].items() if value in theirs
        },
        "figures": {name: _minus(figure["value"], against["figures"][name]["value"])
                    for name, figure in side["figures"].items()},
    }  # fmt: skip


def fairness_report_of(
    client: RegistryClient, model: str, segment: str, since_seconds: float,
    version: str | None = None, against: str | None = None, role: str | None = None,
    min_rows: float = 1.0, now: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The fairness of `version` (default: the rule's primary) across `segment`'s values over
    the window, in `role` (default: QualityRange.fairness_role), beside `against`'s (read in
    the role fairness_role gives it) when given."""
    window = read_quality_window(client, model, since_seconds, now, segment)
    if version is None:
        version = _default_version(client, window, role, segment)
    window.check_version(version)
    side = _side(window, version, role or window.range.fairness_role(version, segment) or PRIMARY,
                 segment, min_rows)  # fmt: skip
    other = None
    if against is not None:
        window.check_version(against)
        against_role = window.range.fairness_role(against, segment) or PRIMARY
        other = _side(window, against, against_role, segment, min_rows)
    return window.header() | {
        "segment": segment, "min_rows": min_rows, "version": side, "against": other,
        "differences": None if other is None else _differences(side, other),
    }  # fmt: skip


def _signed(name: str, value: float | None) -> str:
    return optional_number(value, "+.4g" if name in ("mae", "rmse", "bias") else "+.4f")


def print_fairness(report: dict[str, Any], out: TextIO) -> None:
    """Per value (and version), then the figures with their worst values."""
    side, other, task = report["version"], report["against"], report["task"]
    sides = [side] if other is None else [side, other]
    said = "  against ".join(f"{printable(s['version'])} ({s['role']})" for s in sides)
    print(f"model {printable(report['model'])}  segment {printable(report['segment'])}  version"
          f" {said}  from {report['from']} to {report['to']}", file=out)  # fmt: skip
    names = VALUE_METRICS[task]
    table = [["value", "version", "rows", *(_HEADERS.get(n, n) for n in names)]]
    for value in sorted(set().union(*(s["values"] for s in sides))):
        for s in sides:
            found = s["values"].get(value, {})
            rows = "-" if "n" not in found else format_count(found["n"])
            table.append([value, s["version"], rows,
                          *(format_metric(n, found.get(n)) for n in names)])  # fmt: skip
        if other is not None:
            diffs = report["differences"]["values"].get(value, {})
            table.append([value, "diff", "-", *(_signed(n, diffs.get(n)) for n in names)])
    print_table(table, out)
    header = ["figure", side["version"], "worst"]
    if other is not None:
        header += [other["version"], "worst", "diff"]
    figures = [header]
    for name, figure in side["figures"].items():
        row = [name.replace("_", " "), format_metric(name, figure["value"]), figure["worst"] or "-"]
        if other is not None:
            theirs = other["figures"][name]
            row += [format_metric(name, theirs["value"]), theirs["worst"] or "-",
                    _signed(name, report["differences"]["figures"][name])]  # fmt: skip
        figures.append(row)
    if task == "binary":
        verdicts = [{True: "pass", False: "fail", None: "-"}[s["four_fifths_ok"]] for s in sides]
        figures.append(["four-fifths rule (ratio >= 0.8)", verdicts[0], "",
                        *([verdicts[1], "", ""] if other is not None else [])])  # fmt: skip
    print(file=out)
    print_table(figures, out)
    for s in sides:
        if s["excluded"]:
            print(f"{printable(s['version'])}: left out, under {report['min_rows']:g} rows:"
                  f" {printable(', '.join(s['excluded']))}", file=out)  # fmt: skip


def add_parsers(commands: Commands) -> None:
    """Add `fairness` to gatectl's subcommands."""
    fairness = commands.add_parser(
        "fairness", help="live fairness of a version across one segment's values"
    )
    fairness.add_argument("model")
    fairness.add_argument("--segment", required=True, help="one of the model's segments")
    fairness.add_argument("--version", help="default: the rule's version with the largest weight")
    fairness.add_argument("--against", metavar="VERSION", help="a second version beside it")
    fairness.add_argument(
        "--role", choices=ROLES,
        help="--version's role (default: primary where it has rows there, else shadow)",
    )  # fmt: skip
    fairness.add_argument(
        "--min-rows", type=float, default=1.0,
        help="leave out (and list) values with fewer labelled rows (1)",
    )  # fmt: skip
    add_window_arguments(fairness)
    fairness.set_defaults(handler=run_fairness)


def run_fairness(args: argparse.Namespace, context: CommandContext) -> int:
    report = fairness_report_of(context.client, args.model, args.segment, args.since,
                                args.version, args.against, args.role, args.min_rows)  # fmt: skip
    if context.emit_json:
        print(json.dumps(report), file=context.out)
    else:
        print_fairness(report, context.out)
    return EXIT_OK
