"""`gatectl export` and `gatectl restore`: the registry's control plane into one JSON document
and back, the way back after Redis comes back empty (docs/operations.md, "Backup and
restore")."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from registry_client.backup.document import RegistryExport
from registry_client.backup.export import export, missing_blobs
from registry_client.backup.plan import REFUSED, RESTORED, UNCHANGED
from registry_client.backup.restore import ModelOutcome, RestoreSummary, restore
from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.dry_run import add_dry_run_argument
from registry_client.cli.exit_codes import EXIT_OK, EXIT_REJECTED
from registry_client.cli.tables import print_table, printable
from registry_client.errors import Rejected

__all__ = ["add_parsers"]


def add_parsers(commands: Commands) -> None:
    """Add `export` and `restore` to gatectl's subcommands."""
    exports = commands.add_parser(
        "export", help="write the registry (models, versions, rules, rollouts, audit) as JSON"
    )
    exports.add_argument(
        "--include-artifacts", action="store_true",
        help="also the uploaded artifacts (redis-blob:) the versions name, base64",
    )  # fmt: skip
    exports.add_argument(
        "--output", type=Path, metavar="FILE",
        help="write FILE, replaced only once written whole (default: standard output)",
    )  # fmt: skip
    exports.set_defaults(handler=export_registry)

    restores = commands.add_parser(
        "restore", help="write an export back, in one transaction, audited"
    )
    restores.add_argument("file", metavar="FILE", help="what gatectl export wrote; - for stdin")
    restores.add_argument(
        "--force", action="store_true",
        help="also replace models whose rule in Redis is newer than the export's (audited);"
        " never a version registered with other bytes",
    )  # fmt: skip
    add_dry_run_argument(restores)
    restores.set_defaults(handler=restore_registry)


def export_registry(args: argparse.Namespace, context: CommandContext) -> int:
    """Print the export (or write it to --output) and say what it holds."""
    exported = export(context.client, include_artifacts=args.include_artifacts)
    text = json.dumps(exported.to_document(), sort_keys=True) + "\n"
    if args.output is None:
        context.out.write(text)
    else:
        _write_whole(args.output, text)
    _warn_missing_blobs(exported, context)
    counts = _counts(exported) | {"bytes": len(text.encode())}
    said = (f"exported {counts['models']} models, {counts['versions']} versions,"
            f" {counts['audit_entries']} audit entries, {counts['artifacts']} artifacts at"
            f" epoch {exported.epoch}: {counts['bytes']} bytes")  # fmt: skip
    if args.output is None:  # standard output holds the document
        print(said, file=context.err)
    elif context.emit_json:
        print(json.dumps(counts | {"output": str(args.output)}), file=context.out)
    else:
        print(f"{said} to {args.output}", file=context.out)
    return EXIT_OK


def restore_registry(args: argparse.Namespace, context: CommandContext) -> int:
    """Restore the export in FILE; print per model what was restored, unchanged or refused.
    Exit 1 when a model was refused (the others are restored). With --dry-run, the same
    checks and the same report of what it would do, and nothing written."""
    summary = restore(context.client, _read_document(args.file), actor=context.actor,
                      force=args.force, dry_run=args.dry_run)  # fmt: skip
    if context.emit_json:
        print(json.dumps(summary.as_dict() | ({"dry_run": True} if args.dry_run else {})),
              file=context.out)  # fmt: skip
    else:
        _print_summary(summary, context, args.dry_run)
    for outcome in summary.refused:
        print(f"gatectl: refused: {printable(outcome.reason)}", file=context.err)
    for model, version, sha in summary.missing_blobs:
        print(f"gatectl: warning: {printable(model)} version {printable(version)}: its"
              f" artifact redis-blob:{printable(sha[:12])}... is in neither Redis nor the"
              " export: gateways cannot load it until the same file is registered again"
              " with --upload", file=context.err)  # fmt: skip
    return EXIT_REJECTED if summary.refused else EXIT_OK


def _print_summary(summary: RestoreSummary, context: CommandContext, dry_run: bool) -> None:
    """Per model its result and what is written (a dry run: would be), then the counts."""
    rows: list[list[object]] = [["model", "result", "written" if not dry_run else "would write",
                                 "audit"]]  # fmt: skip
    for outcome in summary.models:
        written = ", ".join(outcome.written) or "-"
        result = f"would be {outcome.result}" if dry_run and outcome.result == RESTORED else (
            outcome.result)  # fmt: skip
        rows.append([outcome.model, result, written, _audit_text(outcome, dry_run)])
    print_table(rows, context.out)
    count = {r: sum(m.result == r for m in summary.models) for r in (RESTORED, UNCHANGED, REFUSED)}
    forced = [m.model for m in summary.models if m.reason and m.result == RESTORED]
    stored = "would be stored" if dry_run else "stored"
    print(f"{count[RESTORED]} {'would be ' if dry_run else ''}restored, {count[UNCHANGED]}"
          f" unchanged, {count[REFUSED]} refused from the export of"
          f" {printable(summary.exported_at)}; epoch {summary.epoch}"
          + (f"; {summary.blobs_written} artifacts {stored}" if summary.blobs_written else "")
          + (f"; forced: {printable(', '.join(forced))}" if forced else "")
          + ("; dry run: nothing written" if dry_run else ""),
          file=context.out)  # fmt: skip


def _audit_text(outcome: ModelOutcome, dry_run: bool) -> str:
    if outcome.result == REFUSED:
        return "-"
    if outcome.audit_skipped:
        return f"kept the stream's own, {outcome.audit_skipped} exported skipped"
    if outcome.audit_written:
        return f"{outcome.audit_written} entries {'would be ' if dry_run else ''}written"
    return "-"


def _counts(exported: RegistryExport) -> dict[str, object]:
    return {
        "exported_at": exported.exported_at, "epoch": exported.epoch,
        "models": len(exported.models),
        "versions": sum(len(m.versions) for m in exported.models.values()),
        "audit_entries": sum(len(m.audit) for m in exported.models.values()),
        "artifacts": len(exported.blobs),
    }  # fmt: skip


def _warn_missing_blobs(exported: RegistryExport, context: CommandContext) -> None:
    missing = missing_blobs(exported)
    if missing and not exported.include_artifacts:
        print(f"gatectl: note: {len(missing)} versions' artifacts are uploaded into Redis"
              " (redis-blob:) and not in this export; --include-artifacts adds them",
              file=context.err)  # fmt: skip
        return
    for model, version, sha in missing:
        print(f"gatectl: warning: {printable(model)} version {printable(version)}: its"
              f" artifact redis-blob:{printable(sha[:12])}... is missing or corrupt in Redis;"
              " the export holds the version, not its bytes", file=context.err)  # fmt: skip


def _write_whole(path: Path, text: str) -> None:
    """Write `path` through a temporary file beside it, so a failed export never leaves a
    cut-short file where an earlier good one was."""
    temporary = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as file:
            temporary = file.name
            file.write(text)
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        raise Rejected(f"--output {path}: cannot write it ({exc.strerror or exc})") from exc


def _read_document(source: str) -> object:
    """The JSON in FILE (or standard input for '-'); Rejected when unreadable or not JSON."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Rejected(
            f"{source}: cannot read it ({getattr(exc, 'strerror', None) or exc})"
        ) from exc
    try:
        document: object = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Rejected(f"{source} is not JSON: {exc}") from exc
    return document
