"""`gatectl versions`, `version show|retire|unretire`, `register` and `import`: a model's
versions with their deployment status, from an ONNX file or a Triton-style model directory.

Registering hashes and uploads a file a chunk at a time, with progress on a terminal
(progress.py), and every write here takes --dry-run (dry_run.py): all its checks, nothing
written."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from registry_client.cards.card import load_card
from registry_client.cli.arguments import name_value_pairs
from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.dry_run import add_dry_run_argument, show_planned
from registry_client.cli.exit_codes import EXIT_OK, EXIT_USAGE
from registry_client.cli.progress import Progress, add_quiet_argument
from registry_client.cli.tables import print_table, printable
from registry_client.cli.version_record import show_version
from registry_client.client import MAX_ARTIFACT_BYTES
from registry_client.errors import NotFound, Rejected
from registry_client.versions.lineage import LINEAGE_FIELDS
from registry_client.versions.status import read_statuses, read_versions

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
    """Add `versions`, `version`, `register` and `import` to gatectl's subcommands."""
    versions = commands.add_parser("versions", help="list a model's versions")
    versions.add_argument("model")
    versions.set_defaults(handler=list_versions)

    version = commands.add_parser(
        "version", help="show a version's whole record, or retire it (or bring it back)"
    )
    version.add_argument("action", choices=["show", "retire", "unretire"])
    version.add_argument("model")
    version.add_argument("version")
    version.add_argument("--reason", default="", help="why, for the audit (retire, unretire)")
    add_dry_run_argument(version)
    version.set_defaults(handler=version_action)

    register = commands.add_parser("register", help="register an ONNX file as a version")
    register.add_argument("model")
    register.add_argument("version")
    register.add_argument("file", type=Path)
    register.add_argument("--description", default="")
    register.add_argument("--tags", default="", help="comma-separated")
    register.add_argument("--metrics", type=_metrics, default={}, help="auc=0.91,recall=0.8")
    register.add_argument(
        "--lineage", default=[], type=_lineage, metavar="NAME=VALUE,...",
        help=f"where it came from: {', '.join(LINEAGE_FIELDS)} (parent: a registered version,"
        " VERSION or MODEL:VERSION)",
    )  # fmt: skip
    register.add_argument(
        "--card", type=Path, metavar="FILE.json|yaml",
        help="the model card: training data, algorithm, intended use, limitations, contact",
    )  # fmt: skip
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
    add_dry_run_argument(register)
    add_quiet_argument(register)
    register.set_defaults(handler=register_version)

    imports = commands.add_parser("import", help="register a Triton-style model directory")
    imports.add_argument("directory", type=Path)
    add_dry_run_argument(imports)
    add_quiet_argument(imports)
    imports.set_defaults(handler=import_directory)


def list_versions(args: argparse.Namespace, context: CommandContext) -> int:
    client, out = context.client, context.out
    versions = read_versions(client, args.model)
    statuses = {s.version: s for s in read_statuses(client, args.model, versions)}
    listed = [fields | {"version": v} for v, fields in versions.items()]
    if context.emit_json:
        print(json.dumps([v | {"deployment": statuses[v["version"]].as_dict()}
                          for v in listed]), file=out)  # fmt: skip
        return EXIT_OK
    rows = [[v["version"], statuses[v["version"]].text, statuses[v["version"]].since or "-",
             v["sha256"][:12], v["size"], v["created_by"], v["created_at"]]
            for v in listed]  # fmt: skip
    print_table([["version", "status", "since", "sha256", "bytes", "registered by", "at"],
                 *rows], out)  # fmt: skip
    return EXIT_OK


def version_action(args: argparse.Namespace, context: CommandContext) -> int:
    client, model, version = context.client, args.model, args.version
    dry_run = args.dry_run
    if args.action == "show":
        if dry_run:
            print("gatectl: --dry-run: only `version retire|unretire` write; `version show`"
                  " reads", file=context.err)  # fmt: skip
            return EXIT_USAGE
        return show_version(args, context)
    if args.action == "retire":
        changed = client.retire_version(model, version, actor=context.actor, reason=args.reason,
                                        dry_run=dry_run)  # fmt: skip
    else:
        changed = client.unretire_version(model, version, actor=context.actor,
                                          reason=args.reason, dry_run=dry_run)  # fmt: skip
    state = "retired" if args.action == "retire" else "registered"
    if dry_run:
        was = ("registered" if state == "retired" else "retired") if changed else state
        return show_planned(context, f"model {model} version {version}", {"status": was},
                            {"status": state})  # fmt: skip
    print(f"{printable(model)} version {printable(version)}: {state}"
          f"{'' if changed else ' already'}", file=context.out)  # fmt: skip
    return EXIT_OK


def _lineage(text: str) -> list[tuple[str, str]]:
    return name_value_pairs(text, "--lineage")


def register_version(args: argparse.Namespace, context: CommandContext) -> int:
    """Store the file's digest (and with --upload its bytes) as a version; --create-model
    creates the model first. --dry-run: every check, the record shown, nothing written."""
    client, actor = context.client, context.actor
    card = None if args.card is None else load_card(args.card)
    progress = Progress.on(context.err, args.quiet)
    new_model = None
    try:
        if args.create_model:
            if args.dry_run:
                new_model = None if _model_exists(context, args.model) else (
                    client.create_model(args.model, actor=actor, dry_run=True))  # fmt: skip
            else:
                client.create_model(args.model, actor=actor)
        stored = client.register_version(
            args.model, args.version, args.file, actor=actor, description=args.description,
            lineage=dict(args.lineage), metrics=args.metrics, upload=args.upload,
            tags=[t for t in args.tags.split(",") if t],
            feature_names=dict(args.feature_names), max_bytes=args.max_artifact_bytes,
            card=card, dry_run=args.dry_run, model_planned=new_model is not None,
            progress=progress,
        )  # fmt: skip
    finally:
        progress.end()
    if args.dry_run:
        if new_model is not None:
            show_planned(context, f"model {args.model}", None, new_model)
        before = _stored_version(context, args.model, args.version)
        return show_planned(context, f"model {args.model} version {args.version}", before,
                            stored)  # fmt: skip
    if context.emit_json:
        print(json.dumps(stored), file=context.out)
    else:
        print(f"registered {printable(args.model)} version {printable(args.version)} sha256"
              f" {printable(stored['sha256'])}", file=context.out)  # fmt: skip
    return EXIT_OK


def _model_exists(context: CommandContext, model: str) -> bool:
    try:
        context.client.show_model(model)
    except NotFound:
        return False
    return True


def _stored_version(context: CommandContext, model: str, version: str) -> dict[str, str] | None:
    try:
        return context.client.show_version(model, version)
    except NotFound:
        return None


def import_directory(args: argparse.Namespace, context: CommandContext) -> int:
    """Register a Triton-style directory's versions, creating missing models; versions
    registered already with the same bytes are left as they are. --dry-run: every check of
    every version, what would be written shown, nothing written."""
    if not args.directory.is_dir():
        raise Rejected(f"{args.directory} is not a directory")
    progress = Progress.on(context.err, args.quiet)
    try:
        found = context.client.import_versions(args.directory, actor=context.actor,
                                               dry_run=args.dry_run, progress=progress)  # fmt: skip
    finally:
        progress.end()
    if args.dry_run:
        for item in found:
            if item.new_model is not None:
                show_planned(context, f"model {item.model}", None, item.new_model)
            show_planned(context, f"model {item.model} version {item.version}", item.before,
                         item.after)  # fmt: skip
        return EXIT_OK
    pairs = [(item.model, item.version) for item in found]
    if context.emit_json:
        print(json.dumps([{"model": m, "version": v} for m, v in pairs]), file=context.out)
    else:
        print_table([["model", "version"], *pairs], context.out)
    return EXIT_OK
