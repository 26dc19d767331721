"""`gatectl reference set` and `gatectl drift`: reference profiles from data or traffic, and
the drift table of a version against its reference or another version."""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from registry_client.cli.tables import print_table, printable
from registry_client.client import RegistryClient
from registry_client.drift.features import feature_columns
from registry_client.drift.reference import FeatureReference
from registry_client.drift.sketch import QUANTILE_LEVELS
from registry_client.drift.statistics import FeatureDrift, dataset_drift, feature_drift
from registry_client.errors import NotFound, Rejected

__all__ = [
    "load_reference_data",
    "print_drift",
    "reference_from_traffic",
    "run_drift_command",
    "version_drift",
]

_CHUNK_BYTES = 8 * 1024 * 1024
PROGRESS_FROM_BYTES = 32 * 1024 * 1024  # smaller files load too fast to need a progress bar


def _numeric_inputs(client: RegistryClient, model: str, version: str) -> list[str]:
    signature = json.loads(client.show_version(model, version).get("signature", "{}") or "{}")
    return [i["name"] for i in signature.get("inputs", [])
            if "string" not in str(i.get("type", ""))]  # fmt: skip


def _read_csv(path: Path, progress: TextIO | None) -> np.ndarray:
    """Numbers, comma-separated, an optional header row; empty cells are missing (NaN)."""
    size = path.stat().st_size
    chunks, done, header_checked = [], 0, False
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK_BYTES):
            block += handle.readline()  # whole lines only
            done += len(block)
            if not header_checked:
                header_checked = True
                first, _, rest = block.partition(b"\n")
                try:
                    [float(cell or "nan") for cell in first.decode().strip().split(",")]
                except ValueError:
                    block = rest  # a header of names
            if block.strip():
                chunks.append(np.genfromtxt(io.BytesIO(block), delimiter=",", ndmin=2))
            if progress is not None:
                progress.write(f"\rreading {path.name}: {100 * min(done, size) // size}%")
    if progress is not None:
        progress.write("\n")
    if not chunks:
        raise Rejected(f"--data {path}: no rows")
    widths = {c.shape[1] for c in chunks}
    if len(widths) != 1:
        raise Rejected(f"--data {path}: rows have different numbers of columns")
    return np.concatenate(chunks)


def load_reference_data(
    client: RegistryClient, model: str, version: str, path: Path, progress: TextIO | None = None
) -> dict[str, np.ndarray]:
    """Input name -> rows, from .npz (one array per input), or .npy/.csv for a model with one
    numeric input. Shown a progress bar on `progress` for large CSV files."""
    inputs = _numeric_inputs(client, model, version)
    if not path.is_file():
        raise Rejected(f"--data {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            unknown = sorted(set(archive.files) - set(inputs))
            if unknown:
                raise Rejected(f"--data {path}: arrays {unknown} are not inputs of {model}"
                               f" version {version} (inputs: {inputs})")  # fmt: skip
            return {name: archive[name] for name in archive.files}
    if len(inputs) != 1:
        raise Rejected(f"--data {path}: {model} version {version} has inputs {inputs}; give"
                       " an .npz file with one array per input")  # fmt: skip
    if suffix == ".npy":
        return {inputs[0]: np.load(path, allow_pickle=False)}
    if suffix == ".csv":
        large = progress is not None and path.stat().st_size >= PROGRESS_FROM_BYTES
        return {inputs[0]: _read_csv(path, progress if large else None)}
    raise Rejected(f"--data {path}: expected a .npy, .npz or .csv file")


def references_from_data(
    data: Mapping[str, np.ndarray], names: Mapping[str, list[str]]
) -> dict[str, FeatureReference]:
    """Per feature, named as the gateway names them (registered names, input[i], ...)."""
    found: dict[str, FeatureReference] = {}
    for name, array in data.items():
        try:
            columns = feature_columns(name, np.asarray(array), names.get(name))
        except ValueError as exc:
            raise Rejected(f"--data: input {name!r}: {exc}") from exc
        if not columns:
            raise Rejected(f"--data: input {name!r} is not numeric (dtype {array.dtype})")
        for feature, column in columns:
            reference = FeatureReference.from_values(column)
            if reference is not None:
                found[feature] = reference
    if not found:
        raise Rejected("--data: no feature has a finite value")
    return found


def reference_from_traffic(
    client: RegistryClient, model: str, source_version: str, since_seconds: float
) -> tuple[dict[str, FeatureReference], int]:
    merged = client.drift.read(model, source_version, since_seconds)
    references = {name: ref for name, sketch in merged.features.items()
                  if (ref := FeatureReference.from_sketch(sketch)) is not None}  # fmt: skip
    if not references:
        raise NotFound(f"no traffic of {model} version {source_version} recorded in that window")
    return references, merged.rows


def _drift_view(drift: FeatureDrift) -> dict[str, Any]:
    return {"feature": drift.feature, "n": drift.n, "psi": drift.psi, "ks": drift.ks,
            "wasserstein": drift.wasserstein, "missing_increase": drift.missing_increase,
            "out_of_range": drift.out_of_range, "verdict": drift.verdict,
            "exact_bins": drift.exact_bins}  # fmt: skip


def version_drift(
    client: RegistryClient, model: str, version: str, since_seconds: float, against: str
) -> dict[str, Any]:
    """The version's inputs over the window against its reference, or against another
    version's inputs over the same window (`against` = "reference" or a version)."""
    client.show_version(model, version)
    merged = client.drift.read(model, version, since_seconds)
    if against == "reference":
        baselines = client.drift.get_reference(model, version)
    else:
        client.show_version(model, against)
        other = client.drift.read(model, against, since_seconds)
        baselines = {name: ref for name, sketch in other.features.items()
                     if (ref := FeatureReference.from_sketch(sketch)) is not None}  # fmt: skip
    features = [
        feature_drift(name, sketch, baselines[name])
        for name, sketch in sorted(merged.features.items())
        if name in baselines
    ]
    return {
        "model": model, "version": version, "against": against,
        "since_seconds": since_seconds, "rows": merged.rows,
        "to": datetime.now(UTC).isoformat(timespec="seconds"),
        "replicas": sorted(merged.replicas), "windows": merged.granularity,
        "dataset": dataset_drift(features),
        "features": [_drift_view(f) for f in features],
        "without_baseline": sorted(set(merged.features) - set(baselines)),
    }  # fmt: skip


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_drift(report: dict[str, Any], out: TextIO = sys.stdout) -> None:
    print(f"model {printable(report['model'])}  version {printable(report['version'])}  against"
          f" {printable(report['against'])}  rows {report['rows']}  replicas"
          f" {len(report['replicas'])}  dataset {printable(report['dataset'])}",
          file=out)  # fmt: skip
    table = [["feature", "n", "PSI", "KS", "Wasserstein", "missing", "out-of-range", "verdict"]]
    for f in report["features"]:
        table.append([f["feature"], str(f["n"]), _fmt(f["psi"], ".3f"), _fmt(f["ks"], ".3f"),
                      _fmt(f["wasserstein"], ".3f"), _fmt(f["missing_increase"], "+.3f"),
                      _fmt(f["out_of_range"], ".3f"), f["verdict"]])  # fmt: skip
    print_table(table, out)
    if report["without_baseline"]:
        print(f"no baseline for: {printable(', '.join(report['without_baseline']))}", file=out)


def _primary_version(client: RegistryClient, model: str) -> str:
    rule = client.get_route(model)
    if rule is None:
        raise NotFound(f"model {model!r} has no rule: pass --version")
    return max(rule.split, key=lambda s: s.weight).version


def run_drift_command(
    args: argparse.Namespace, client: RegistryClient, actor: str, out: TextIO, err: TextIO
) -> None:
    """`gatectl reference set|show` and `gatectl drift`."""
    if args.command == "drift":
        version = args.version or _primary_version(client, args.model)
        report = version_drift(client, args.model, version, args.since, args.against)
        if args.json:
            print(json.dumps(report), file=out)
        else:
            print_drift(report, out)
        return
    client.show_version(args.model, args.version)
    if args.action == "set":
        if args.data is not None:
            data = load_reference_data(client, args.model, args.version, args.data,
                                       err if err.isatty() else None)  # fmt: skip
            registered = client.show_version(args.model, args.version).get("feature_names")
            references = references_from_data(data, json.loads(registered or "{}"))
            rows = max(len(a) for a in data.values())
            meta: dict[str, object] = {"source": f"data:{args.data.name}", "rows": rows}
        else:
            client.show_version(args.model, args.from_traffic)
            references, rows = reference_from_traffic(client, args.model, args.from_traffic,
                                                      args.since)  # fmt: skip
            meta = {"source": f"traffic:{args.from_traffic}", "since_seconds": args.since,
                    "rows": rows}  # fmt: skip
        meta |= {"by": actor, "at": datetime.now(UTC).isoformat(timespec="seconds")}
        client.drift.set_reference(args.model, args.version, references, meta, actor=actor)
    references = client.drift.get_reference(args.model, args.version)
    meta = client.drift.reference_meta(args.model, args.version)
    if args.json:
        view = {name: {"count": r.count, "missing_rate": r.missing_rate, "minimum": r.minimum,
                       "maximum": r.maximum, "mean": r.mean, "std": r.std,
                       "edges": r.edges.tolist()} for name, r in references.items()}  # fmt: skip
        print(json.dumps({"meta": meta, "features": view}), file=out)
        return
    print(f"reference of {printable(args.model)} version {printable(args.version)}: " +
          printable(", ".join(f"{k} {v}" for k, v in sorted(meta.items()))),
          file=out)  # fmt: skip
    table = [["feature", "count", "missing", "min", "median", "max", "mean", "std"]]
    for name, r in sorted(references.items()):
        median = r.edges[list(QUANTILE_LEVELS).index(0.5)]
        numbers = (r.minimum, median, r.maximum, r.mean, r.std)
        table.append([name, str(r.count), f"{r.missing_rate:.3f}", *(f"{x:.4g}" for x in numbers)])
    print_table(table, out)
