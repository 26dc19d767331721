"""`gatectl reference set|show` and `gatectl drift`: a version's reference input profile, from
data or from traffic (reference_data.py reads them; `set --dry-run` builds and shows it, and
stores nothing), and the drift table of a version against its reference or another version."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.drift_picture import drift_picture, drift_sketches
from registry_client.cli.dry_run import add_dry_run_argument, field_changes
from registry_client.cli.durations import duration_argument
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.formatting import iso_now, optional_number
from registry_client.cli.plotting import add_plot_argument, write_plot
from registry_client.cli.reference_data import (
    load_reference_data,
    reference_from_traffic,
    references_from_data,
)
from registry_client.cli.tables import print_table, printable
from registry_client.client import RegistryClient
from registry_client.drift.reference import FeatureReference
from registry_client.drift.sketch import QUANTILE_LEVELS
from registry_client.drift.statistics import FeatureDrift, dataset_drift, feature_drift
from registry_client.drift.store import MergedSketches
from registry_client.errors import NotFound

__all__ = ["add_parsers", "print_drift", "version_drift"]

# The drift table's measure columns, in order, and how each is written.
_MEASURE_FORMATS = (("psi", ".3f"), ("ks", ".3f"), ("wasserstein", ".3f"),
                    ("missing_increase", "+.3f"), ("out_of_range", ".3f"))  # fmt: skip


def _drift_view(drift: FeatureDrift) -> dict[str, Any]:
    return {"feature": drift.feature, "n": drift.n, "psi": drift.psi, "ks": drift.ks,
            "wasserstein": drift.wasserstein, "missing_increase": drift.missing_increase,
            "out_of_range": drift.out_of_range, "verdict": drift.verdict,
            "exact_bins": drift.exact_bins}  # fmt: skip


def version_drift(
    client: RegistryClient, model: str, version: str, since_seconds: float, against: str,
    sketches: tuple[MergedSketches, dict[str, FeatureReference]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The version's inputs over the window against its reference, or against another
    version's inputs over the same window (`against` = "reference" or a version); from
    `sketches` (drift_sketches()) when given, else read now."""
    merged, baselines = sketches or drift_sketches(client, model, version, since_seconds, against)
    features = [
        feature_drift(name, sketch, baselines[name])
        for name, sketch in sorted(merged.features.items())
        if name in baselines
    ]
    return {
        "model": model, "version": version, "against": against,
        "since_seconds": since_seconds, "rows": merged.rows,
        "to": iso_now(),
        "replicas": sorted(merged.replicas), "windows": merged.granularity,
        "dataset": dataset_drift(features),
        "features": [_drift_view(f) for f in features],
        "without_baseline": sorted(set(merged.features) - set(baselines)),
    }  # fmt: skip


def print_drift(report: dict[str, Any], out: TextIO = sys.stdout) -> None:
    print(f"model {printable(report['model'])}  version {printable(report['version'])}  against"
          f" {printable(report['against'])}  rows {report['rows']}  replicas"
          f" {len(report['replicas'])}  dataset {printable(report['dataset'])}",
          file=out)  # fmt: skip
    table = [["feature", "n", "PSI", "KS", "Wasserstein", "missing", "out-of-range", "verdict"]]
    for f in report["features"]:
        table.append([f["feature"], str(f["n"]),
                      *(optional_number(f[key], spec) for key, spec in _MEASURE_FORMATS),
                      f["verdict"]])  # fmt: skip
    print_table(table, out)
    if report["without_baseline"]:
        print(f"no baseline for: {printable(', '.join(report['without_baseline']))}", file=out)


def _primary_version(client: RegistryClient, model: str) -> str:
    rule = client.get_route(model)
    if rule is None:
        raise NotFound(f"model {model!r} has no rule: pass --version")
    return max(rule.split, key=lambda s: s.weight).version


def add_parsers(commands: Commands) -> None:
    """Add `reference` and `drift` to gatectl's subcommands."""
    reference = commands.add_parser("reference", help="a version's reference input profile")
    reference_actions = reference.add_subparsers(dest="action", required=True)
    reference_set = reference_actions.add_parser("set", help="from training data or traffic")
    reference_set.add_argument("model")
    reference_set.add_argument("version")
    source = reference_set.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help=".npy or .csv (one input), .npz (per input)")
    source.add_argument("--from-traffic", metavar="VERSION", help="a version's recent inputs")
    reference_set.add_argument(
        "--since", type=duration_argument, default=3600.0,
        help="with --from-traffic: how far back (1h)",
    )  # fmt: skip
    add_dry_run_argument(reference_set)
    reference_set.set_defaults(handler=set_reference)
    reference_show = reference_actions.add_parser(
        "show", help="a version's reference profile: count, missing, range, mean per feature"
    )
    reference_show.add_argument("model")
    reference_show.add_argument("version")
    reference_show.set_defaults(handler=show_reference)

    drift = commands.add_parser("drift", help="input drift per feature, with verdicts")
    drift.add_argument("model")
    drift.add_argument("--version", help="default: the rule's version with the largest weight")
    drift.add_argument("--since", type=duration_argument, default=900.0,
                       help="how far back (15m)")  # fmt: skip
    drift.add_argument(
        "--against", default="reference", help="'reference' (default) or another VERSION"
    )
    add_plot_argument(drift, "each feature's quantile curve beside its baseline's")
    drift.set_defaults(handler=run_drift)


def run_drift(args: argparse.Namespace, context: CommandContext) -> int:
    version = args.version or _primary_version(context.client, args.model)
    sketches = drift_sketches(context.client, args.model, version, args.since, args.against)
    report = version_drift(context.client, args.model, version, args.since, args.against,
                           sketches)  # fmt: skip
    if context.emit_json:
        print(json.dumps(report), file=context.out)
    else:
        print_drift(report, context.out)
    if args.plot is not None:
        write_plot(args.plot, drift_picture(report, *sketches, args.since), context.err)
    return EXIT_OK


def set_reference(args: argparse.Namespace, context: CommandContext) -> int:
    """Profile --data or --from-traffic, store it as the version's reference, then show it
    (--dry-run: show it and what it would replace; store nothing)."""
    client, model, version = context.client, args.model, args.version
    client.show_version(model, version)
    if args.data is not None:
        progress = context.err if context.err.isatty() else None
        data = load_reference_data(client, model, version, args.data, progress)
        registered = client.show_version(model, version).get("feature_names")
        references = references_from_data(data, json.loads(registered or "{}"))
        rows = max(len(a) for a in data.values())
        meta: dict[str, object] = {"source": f"data:{args.data.name}", "rows": rows}
    else:
        client.show_version(model, args.from_traffic)
        references, rows = reference_from_traffic(client, model, args.from_traffic, args.since)
        meta = {"source": f"traffic:{args.from_traffic}", "since_seconds": args.since,
                "rows": rows}  # fmt: skip
    meta |= {"by": context.actor, "at": iso_now()}
    client.drift.set_reference(model, version, references, meta, actor=context.actor,
                               dry_run=args.dry_run)  # fmt: skip
    if args.dry_run:
        return _show_planned(context, model, version, references, meta)
    return show_reference(args, context)


def show_reference(args: argparse.Namespace, context: CommandContext) -> int:
    client = context.client
    client.show_version(args.model, args.version)
    references = client.drift.get_reference(args.model, args.version)
    meta = client.drift.reference_meta(args.model, args.version)
    if context.emit_json:
        print(json.dumps({"meta": meta, "features": _features_view(references)}),
              file=context.out)  # fmt: skip
        return EXIT_OK
    print(f"reference of {printable(args.model)} version {printable(args.version)}: " +
          printable(", ".join(f"{k} {v}" for k, v in sorted(meta.items()))),
          file=context.out)  # fmt: skip
    _print_features(references, context.out)
    return EXIT_OK


def _show_planned(
    context: CommandContext, model: str, version: str,
    references: Mapping[str, FeatureReference], meta: Mapping[str, object],
) -> int:  # fmt: skip
    """The profile built, and what it would replace: the stored one's source, rows and
    number of features (`-` when the version has none). JSON: {"dry_run", "subject",
    "before", "after", "changes", "meta", "features"}."""
    stored = context.client.drift.reference_summary(model, version)
    after = {**meta, "features": len(references)}
    lines = field_changes(stored, after)
    subject = f"reference of {model} version {version}"
    if context.emit_json:
        print(json.dumps({"dry_run": True, "subject": subject, "before": stored, "after": after,
                          "changes": lines, "meta": dict(meta),
                          "features": _features_view(references)}),
              file=context.out)  # fmt: skip
        return EXIT_OK
    print(f"{printable(subject)}  (dry run: nothing stored)", file=context.out)
    for line in lines:
        print(f"  {printable(line)}", file=context.out)
    _print_features(references, context.out)
    return EXIT_OK


def _features_view(references: Mapping[str, FeatureReference]) -> dict[str, Any]:
    return {name: {"count": r.count, "missing_rate": r.missing_rate, "minimum": r.minimum,
                   "maximum": r.maximum, "mean": r.mean, "std": r.std,
                   "edges": r.edges.tolist()} for name, r in references.items()}  # fmt: skip


def _print_features(references: Mapping[str, FeatureReference], out: TextIO) -> None:
    table = [["feature", "count", "missing", "min", "median", "max", "mean", "std"]]
    for name, r in sorted(references.items()):
        median = r.edges[list(QUANTILE_LEVELS).index(0.5)]
        numbers = (r.minimum, median, r.maximum, r.mean, r.std)
        table.append([name, str(r.count), f"{r.missing_rate:.3f}", *(f"{x:.4g}" for x in numbers)])
    print_table(table, out)
