"""`gatectl versions`, `version-status`, `register` and `import`: a model's versions, from an
ONNX file or a Triton-style model directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from registry_client.cli.arguments import name_value_pairs
from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.tables import print_table, printable
from registry_client.client import MAX_ARTIFACT_BYTES
from registry_client.errors import Rejected

__all__ = ["add_parsers"]


def _metrics(text: str) -> dict[str, float]:
    out = {}
    for name, value in name_value_pairs(text, "--metrics"):
        try:
            out[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--metrics: {name} must be a number") from None
    return out


def _feature_names(text: str) -> tuple[str, list[str]]:
    """'[INPUT:]a,b,c' -> (INPUT or '', names)."""
    head, sep, tail = text.partition(":")
    input_name, names = (head, tail) if sep and "," not in head else ("", text)
    listed = [n.strip() for n in names.split(",")]
    if not all(listed):
        raise argparse.ArgumentTypeError(f"--feature-names: empty name in {text!r}")
    return input_name, listed


def _byte_count(text: str) -> int:
    # Named in argparse's message when int() refuses what isdigit() let through ('²').
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of bytes >= 1, got {text!r}")
    return int(text)


def add_parsers(commands: Commands) -> None:
    """Add `versions`, `version-status`, `register` and `import` to gatectl's subcommands."""
    versions = commands.add_parser("versions", help="list a model's versions")
    versions.add_argument("model")
    versions.set_defaults(handler=list_versions)

    version_status = commands.add_parser("version-status", help="mark a version's status")
    version_status.add_argument("model")
    version_status.add_argument("version")
    version_status.add_argument("status", choices=["registered", "serving", "retired"])
    version_status.set_defaults(handler=set_version_status)

    register = commands.add_parser("register", help="register an ONNX file as a version")
    register.add_argument("model")
    register.add_argument("version")
    register.add_argument("file", type=Path)
    register.add_argument("--description", default="")
    register.add_argument("--tags", default="", help="comma-separated")
    register.add_argument("--metrics", type=_metrics, default={}, help="auc=0.91,recall=0.8")
    register.add_argument("--lineage", default=[], type=_lineage,
                          help="data=URI,data_sha256=H,code=REV,parent=V")  # fmt: skip
    register.add_argument(
        "--feature-names", type=_feature_names, action="append", default=[],
        metavar="[INPUT:]NAME,NAME,...",
        help="name an input's columns for drift reports (INPUT: needed when several inputs)",
    )  # fmt: skip
    register.add_argument("--create-model", action="store_true", help="create the model too")
    register.add_argument(
        "--upload", action="store_true", help="store the bytes in Redis (for other hosts)"
    )
    register.add_argument(
        "--max-artifact-bytes", type=_byte_count, default=MAX_ARTIFACT_BYTES,
        help="refuse larger files, read no further (2 GiB - 1, the gateways' default cap)",
    )  # fmt: skip
    register.set_defaults(handler=register_version)

    imports = commands.add_parser("import", help="register a Triton-style model directory")
    imports.add_argument("directory", type=Path)
    imports.set_defaults(handler=import_directory)


def list_versions(args: argparse.Namespace, context: CommandContext) -> int:
    client, out = context.client, context.out
    listed = [client.show_version(args.model, v) | {"version": v}
              for v in client.list_versions(args.model)]  # fmt: skip
    if context.emit_json:
        print(json.dumps(listed), file=out)
        return EXIT_OK
    rows = [[v["version"], v["status"], v["sha256"][:12], v["size"], v["created_by"],
             v["created_at"]] for v in listed]  # fmt: skip
    print_table([["version", "status", "sha256", "bytes", "by", "at"], *rows], out)
    return EXIT_OK


def set_version_status(args: argparse.Namespace, context: CommandContext) -> int:
    context.client.set_version_status(args.model, args.version, args.status,
                                      actor=context.actor)  # fmt: skip
    print(f"{printable(args.model)} version {printable(args.version)}: {args.status}",
          file=context.out)  # fmt: skip
    return EXIT_OK


def _lineage(text: str) -> list[tuple[str, str]]:
    return name_value_pairs(text, "--lineage")


def register_version(args: argparse.Namespace, context: CommandContext) -> int:
    """Store the file's digest (and with --upload its bytes) as a version; --create-model
    creates the model first."""
    client, actor = context.client, context.actor
    lineage = dict(args.lineage)
    if args.create_model:
        client.create_model(args.model, actor=actor)
    stored = client.register_version(
        args.model, args.version, args.file, actor=actor, description=args.description,
        lineage=lineage, metrics=args.metrics, upload=args.upload,
        tags=[t for t in args.tags.split(",") if t],
        feature_names=dict(args.feature_names), max_bytes=args.max_artifact_bytes,
    )  # fmt: skip
    if context.emit_json:
        print(json.dumps(stored), file=context.out)
    else:
        print(f"registered {printable(args.model)} version {printable(args.version)} sha256"
              f" {printable(stored['sha256'])}", file=context.out)  # fmt: skip
    return EXIT_OK


def import_directory(args: argparse.Namespace, context: CommandContext) -> int:
    """Register a Triton-style directory's versions, creating missing models; versions
    registered already with the same bytes are left as they are."""
    if not args.directory.is_dir():
        raise Rejected(f"{args.directory} is not a directory")
    found = context.client.import_repository(args.directory, actor=context.actor)
    if context.emit_json:
        print(json.dumps([{"model": m, "version": v} for m, v in found]), file=context.out)
    else:
        print_table([["model", "version"], *found], context.out)
    return EXIT_OK
