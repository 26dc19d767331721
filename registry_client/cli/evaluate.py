"""`gatectl evaluate MODEL VERSION --data X.npz --labels y.npy [--segments seg.csv]`: a
version's accuracy and fairness on a labelled dataset before it serves, computed as its live
predictions will be (registry_client.quality.offline) and stored on the version, where
`rollout start --require-evaluation` looks for it (with --dry-run: computed and printed, with
what it would replace, and not stored).

Every file is checked before the version runs and nothing is stored unless all of it is read:
a wrong file exits 1 naming the file and what is wrong with it."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.dry_run import add_dry_run_argument, field_changes
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.formatting import iso_time, optional_number
from registry_client.cli.tables import print_table, printable
from registry_client.errors import Rejected
from registry_client.quality.evaluation import Evaluation
from registry_client.quality.offline import DatasetHashes, evaluate_rows, task_labels
from registry_client.quality.runner import run_version
from registry_client.quality.scores import scores_of
from registry_client.quality.task import QualityConfig

__all__ = ["add_parsers", "print_evaluation"]

DEFAULT_BATCH = 1024
# The metrics each segment value's row shows, per task (--json has them all).
_SEGMENT_COLUMNS = {
    "binary": ("n", "accuracy", "precision", "recall", "auc_roc", "selection_rate"),
    "multiclass": ("n", "accuracy", "macro_f1"),
    "regression": ("n", "mae", "rmse", "bias"),
}


def _batch(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of rows >= 1, got {text!r}")
    return int(text)


def add_parsers(commands: Commands) -> None:
    """Add `evaluate` to gatectl's subcommands."""
    evaluate = commands.add_parser(
        "evaluate", help="a version's accuracy and fairness on a labelled dataset, stored on it"
    )
    evaluate.add_argument("model")
    evaluate.add_argument("version")
    evaluate.add_argument(
        "--data",
        type=Path,
        required=True,
        help="an .npz archive (np.savez) of one array per model input, by name",
    )
    evaluate.add_argument(
        "--labels", type=Path, required=True, help="an .npy array of one label per row"
    )
    evaluate.add_argument(
        "--segments", type=Path, help="a CSV file: a header of segment names, one row per example"
    )
    evaluate.add_argument("--batch", type=_batch, default=DEFAULT_BATCH,
                          help=f"rows per run of the model ({DEFAULT_BATCH})")  # fmt: skip
    add_dry_run_argument(evaluate)
    evaluate.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace, context: CommandContext) -> int:
    """Read and check the files, run the version, store and print its evaluation."""
    client = context.client
    config = client.model_quality(args.model)
    if config is None:
        raise Rejected(f"model {args.model!r} has no quality config: give its task first"
                       f" (gatectl model create {args.model} --task ...)")  # fmt: skip
    client.show_version(args.model, args.version)  # NotFound before any file is read
    data_bytes, arrays = _read_data(args.data)
    labels_bytes, labels = _read_labels(args.labels)
    segments_bytes, segments = (None, {}) if args.segments is None else _read_segments(
        args.segments, config)  # fmt: skip
    rows = min(len(array) if array.ndim else 1 for array in arrays.values())
    if len(labels) != rows:
        raise Rejected(f"--labels {args.labels}: {len(labels)} labels for {rows} rows of"
                       f" --data {args.data}")  # fmt: skip
    for dimension, values in segments.items():
        if len(values) != rows:
            raise Rejected(f"--segments {args.segments}: {len(values)} rows of {dimension} for"
                           f" {rows} rows of --data {args.data}")  # fmt: skip
    try:
        task_labels(config, labels)
    except Rejected as exc:
        raise Rejected(f"--labels {args.labels}: {exc} ({config.task} model)") from exc
    artifact = client.version_artifact(args.model, args.version)
    try:
        outputs = run_version(artifact, arrays, config.score_output, args.batch)
    except Rejected as exc:
        raise Rejected(f"--data {args.data}: {exc}") from exc
    hashes = DatasetHashes(_sha256(data_bytes), _sha256(labels_bytes),
                           None if segments_bytes is None else _sha256(segments_bytes))  # fmt: skip
    evaluation = evaluate_rows(config, scores_of(config, outputs), labels, segments, hashes)
    stored = _stored(context, args.model, args.version) if args.dry_run else None
    client.record_evaluation(args.model, args.version, evaluation, actor=context.actor,
                             dry_run=args.dry_run)  # fmt: skip
    view = {"model": args.model, "version": args.version, **json.loads(evaluation.to_json())}
    if args.dry_run:  # what it would replace, by the figures the table shows
        lines = field_changes(stored, _summary(evaluation))
        view |= {"dry_run": True, "before": stored, "changes": lines}
    if context.emit_json:
        print(json.dumps(view), file=context.out)
        return EXIT_OK
    print_evaluation(args.model, args.version, evaluation, context.out)
    if args.dry_run:
        print("\ndry run: nothing stored; the version's evaluation would change:", file=context.out)
        for line in view["changes"] or ["no change"]:
            print(f"  {printable(line)}", file=context.out)
    return EXIT_OK


def _stored(context: CommandContext, model: str, version: str) -> dict[str, Any] | None:
    """The version's evaluation now, as _summary() compares it (None: it has none)."""
    try:
        found = context.client.evaluation(model, version)
    except Rejected:  # unreadable: the write would replace it all the same
        return {"evaluation": "unreadable"}
    return None if found is None else _summary(found)


def _summary(e: Evaluation) -> dict[str, Any]:
    """What a dry run compares: when, on what, every metric and each dimension's gap."""
    summary: dict[str, Any] = {
        "evaluated": iso_time(e.time), "rows": e.rows, "data_sha256": e.data_sha256[:12],
        "labels_sha256": e.labels_sha256[:12],
        "segments_sha256": None if e.segments_sha256 is None else e.segments_sha256[:12],
    }  # fmt: skip
    summary |= {name: optional_number(value, ".4g") for name, value in e.metrics.items()}
    summary |= {f"gap.{d}": f"{metric} {gap:.4g} ({worst})"
                for d, (metric, gap, worst) in e.gaps.items()}  # fmt: skip
    return summary


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise Rejected(f"{flag} {path}: cannot read it ({exc.strerror})") from exc


def _read_data(path: Path) -> tuple[bytes, dict[str, np.ndarray]]:
    raw = _read(path, "--data")
    try:
        found = np.load(io.BytesIO(raw), allow_pickle=False)
        if not isinstance(found, np.lib.npyio.NpzFile):
            raise Rejected(f"--data {path}: expected an .npz archive of one array per input"
                           " (np.savez), got a single array")  # fmt: skip
        with found:
            arrays = {name: found[name] for name in found.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise Rejected(f"--data {path}: not an .npz archive numpy can read: {exc}") from exc
    if not arrays:
        raise Rejected(f"--data {path}: holds no arrays; expected one per model input")
    return raw, arrays


def _read_labels(path: Path) -> tuple[bytes, list[float]]:
    raw = _read(path, "--labels")
    try:
        found = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise Rejected(f"--labels {path}: not an .npy array numpy can read: {exc}") from exc
    if not isinstance(found, np.ndarray):
        raise Rejected(f"--labels {path}: expected one .npy array (np.save), got an archive")
    if found.dtype.kind not in "biuf":
        raise Rejected(f"--labels {path}: holds {found.dtype}; labels are numbers")
    if found.ndim == 2 and found.shape[1] == 1:
        found = found[:, 0]
    if found.ndim != 1:
        raise Rejected(f"--labels {path}: shape {list(found.shape)}; expected one label per"
                       " row ([N] or [N, 1])")  # fmt: skip
    return raw, [float(v) for v in found]


def _read_segments(path: Path, config: QualityConfig) -> tuple[bytes, dict[str, list[str]]]:
    raw = _read(path, "--segments")
    try:
        lines = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise Rejected(f"--segments {path}: not a UTF-8 CSV file: {exc}") from exc
    if not lines or not lines[0]:
        raise Rejected(f"--segments {path}: expected a header of segment names")
    header = [name.strip() for name in lines[0]]
    for name in header:
        if name not in config.segments:
            raise Rejected(f"--segments {path}: column {name!r} is not a segment of the model"
                           f" (its segments: {', '.join(config.segments) or 'none'})")  # fmt: skip
    if len(set(header)) != len(header):
        raise Rejected(f"--segments {path}: a column is named twice in {header}")
    columns: dict[str, list[str]] = {name: [] for name in header}
    for number, line in enumerate(lines[1:], start=2):
        if len(line) != len(header):
            raise Rejected(f"--segments {path}: line {number} has {len(line)} fields, the"
                           f" header {len(header)}")  # fmt: skip
        for name, value in zip(header, line, strict=True):
            columns[name].append(value)
    return raw, columns


def print_evaluation(model: str, version: str, evaluation: Evaluation, out: TextIO) -> None:
    """The evaluation as gatectl prints it: what was read, the metrics, each segment value's
    main metrics and each dimension's fairness gap."""
    e = evaluation
    print(f"model {printable(model)}  version {printable(version)}  task {e.task}  rows"
          f" {e.rows}  evaluated {iso_time(e.time)}", file=out)  # fmt: skip
    hashes = f"data {e.data_sha256[:12]}  labels {e.labels_sha256[:12]}"
    if e.segments_sha256 is not None:
        hashes += f"  segments {e.segments_sha256[:12]}"
    print(f"sha256 {hashes}", file=out)
    rows: list[list[Any]] = [["metric", "value"]]
    rows += [[name, optional_number(value, ".4g")] for name, value in e.metrics.items()]
    print_table(rows, out)
    if e.segments:
        columns = _SEGMENT_COLUMNS[e.task]
        table: list[list[Any]] = [["dimension", "value", *columns]]
        for dimension, values in e.segments.items():
            for value, metrics in values.items():
                figures = [optional_number(metrics.get(c), ".4g") for c in columns]
                table.append([dimension, value, *figures])
        print(file=out)
        print_table(table, out)
    if e.gaps:
        gaps: list[list[Any]] = [["dimension", "fairness gap", "value", "worst"]]
        gaps += [[d, metric, f"{gap:.4g}", worst] for d, (metric, gap, worst) in e.gaps.items()]
        print(file=out)
        print_table(gaps, out)
