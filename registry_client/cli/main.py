"""`gatectl`: the operators' CLI over RegistryClient. It prints; the client holds the logic.

Exit codes: 0 ok, 1 rejected (validation, not found), 2 usage, 3 conflict (the
rule changed underneath: read again and retry), 4 Redis unreachable, 5 a rule was written
but none of the live gateways applied it within --wait (some did: 0, with a warning).

What gatectl prints but did not write (anything read from Redis) goes through
tables.printable(): control and format characters show as escapes, never reach the terminal.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from registry_client.cli.apply_wait import EXIT_NOT_APPLIED, add_wait_arguments, show_and_wait
from registry_client.cli.compare import compare_versions, parse_duration, print_comparison
from registry_client.cli.drift import run_drift_command
from registry_client.cli.rollout import add_rollout_parser, run_rollout_command
from registry_client.cli.tables import print_table, printable
from registry_client.client import MAX_ARTIFACT_BYTES, RegistryClient
from registry_client.errors import Conflict, Rejected, Unreachable
from registry_client.schema import (
    MAX_ACTOR_CHARS,
    MAX_REASON_CHARS,
    MAX_WEIGHT,
    PRIVATE_SOCKET_NAME,
    RouteRule,
    SchemaError,
    Shadow,
    Split,
    default_data_dir,
    private_redis_url,
    text_problem,
    validate_actor,
)

__all__ = ["main"]

# The gateway's own variables for these settings, so one environment serves both.
REDIS_URL_VARIABLE = "ONNXGATE_REDIS_URL"
NAMESPACE_VARIABLE = "ONNXGATE_NAMESPACE"
DATA_DIR_VARIABLE = "ONNXGATE_DATA_DIR"
DEFAULT_NAMESPACE = "onnxgate"
EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_CONFLICT, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_CODES = f"""exit codes:
  0  done (a rule written: applied by every live gateway, by some (a warning lists the
     others), or no gateway is live (a note))
  1  rejected: validation failed, or no such model, version, rule or rollout
  2  usage: a malformed flag or value, no Redis given
  {EXIT_CONFLICT}  conflict: the rule changed underneath; read it again and retry
  {EXIT_UNREACHABLE}  Redis unreachable
  {EXIT_NOT_APPLIED}  a rule was written, but none of the live gateways applied it within --wait
     (each is listed with why: a version FAILED, still loading); it stays stored
"""


def _pairs(text: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"{what}: expected NAME=VALUE, got {item!r}")
        pairs.append((name.strip(), value.strip()))
    return pairs


def _split(text: str) -> list[Split]:
    out = []
    for version, weight in _pairs(text, "--split"):
        try:
            out.append(Split(version, int(weight)))
        except ValueError:  # not digits, or more than int() converts
            raise argparse.ArgumentTypeError(
                f"--split: weight of {version!r} must be an integer from 0 to {MAX_WEIGHT}"
            ) from None
    return out


def _reason(text: str) -> str:
    """--reason: at most MAX_REASON_CHARS, no control or format characters."""
    problem = text_problem(text, MAX_REASON_CHARS)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _actor(text: str) -> str:
    """--actor: at most MAX_ACTOR_CHARS, no control or format characters ('': the login)."""
    problem = text_problem(text, MAX_ACTOR_CHARS)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _shadows(text: str) -> list[Shadow]:
    out = []
    for version, percent in _pairs(text, "--shadow"):
        try:
            out.append(Shadow(version, float(percent)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--shadow: percent of {version!r} must be a number"
            ) from None
    return out


def _metrics(text: str) -> dict[str, float]:
    out = {}
    for name, value in _pairs(text, "--metrics"):
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
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of bytes >= 1, got {text!r}")
    return int(text)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_REASON_HELP = f"why, for the audit (at most {MAX_REASON_CHARS} characters, no control characters)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatectl", description=__doc__.splitlines()[0], epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--redis-url", help=f"Redis URL (or ${REDIS_URL_VARIABLE})")
    parser.add_argument(
        "--data-dir", type=Path,
        help=f"without a URL: the data directory of a gateway's private Redis (or"
        f" ${DATA_DIR_VARIABLE}; default ~/.local/share/onnxgate)",
    )  # fmt: skip
    parser.add_argument(
        "--namespace",
        help=f"key namespace (or ${NAMESPACE_VARIABLE}; default {DEFAULT_NAMESPACE})",
    )
    parser.add_argument(
        "--actor", type=_actor,
        help=f"who is acting, for the audit (default: login name; at most {MAX_ACTOR_CHARS}"
        " characters, no control characters)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("models", help="list models")
    model = commands.add_parser("model", help="create or describe a model")
    model.add_argument("action", choices=["create", "show"])
    model.add_argument("name")
    model.add_argument("--owner")
    model.add_argument("--description")
    model.add_argument("--tags", help="comma-separated")
    model.add_argument(
        "--batch-delay-us", type=int,
        help="dynamic batching for this model's versions: -1 off, else the longest wait",
    )  # fmt: skip
    model.add_argument("--max-batch-size", type=int, help="rows per batched run and request")

    versions = commands.add_parser("versions", help="list a model's versions")
    versions.add_argument("model")

    version_status = commands.add_parser("version-status", help="mark a version's status")
    version_status.add_argument("model")
    version_status.add_argument("version")
    version_status.add_argument("status", choices=["registered", "serving", "retired"])

    register = commands.add_parser("register", help="register an ONNX file as a version")
    register.add_argument("model")
    register.add_argument("version")
    register.add_argument("file", type=Path)
    register.add_argument("--description", default="")
    register.add_argument("--tags", default="", help="comma-separated")
    register.add_argument("--metrics", type=_metrics, default={}, help="auc=0.91,recall=0.8")
    register.add_argument("--lineage", default="", help="data=URI,data_sha256=H,code=REV,parent=V")
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

    imports = commands.add_parser("import", help="register a Triton-style model directory")
    imports.add_argument("directory", type=Path)

    compare = commands.add_parser(
        "compare", help="versions side by side: share, errors, latency, agreement, metrics"
    )
    compare.add_argument("model")
    compare.add_argument("versions", nargs="*", help="only these versions (default: all)")
    compare.add_argument(
        "--since", type=_duration, default=900.0, help="how far back: 30s, 15m, 2h, 1d (15m)"
    )

    reference = commands.add_parser("reference", help="a version's reference input profile")
    reference_actions = reference.add_subparsers(dest="action", required=True)
    reference_set = reference_actions.add_parser("set", help="from training data or traffic")
    reference_set.add_argument("model")
    reference_set.add_argument("version")
    source = reference_set.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help=".npy or .csv (one input), .npz (per input)")
    source.add_argument("--from-traffic", metavar="VERSION", help="a version's recent inputs")
    reference_set.add_argument(
        "--since", type=_duration, default=3600.0, help="with --from-traffic: how far back (1h)"
    )
    reference_show = reference_actions.add_parser("show")
    reference_show.add_argument("model")
    reference_show.add_argument("version")

    drift = commands.add_parser("drift", help="input drift per feature, with verdicts")
    drift.add_argument("model")
    drift.add_argument("--version", help="default: the rule's version with the largest weight")
    drift.add_argument("--since", type=_duration, default=900.0, help="how far back (15m)")
    drift.add_argument(
        "--against", default="reference", help="'reference' (default) or another VERSION"
    )

    route = commands.add_parser("route", help="show, change, audit or roll back a rule")
    actions = route.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show")
    show.add_argument("model")
    change = actions.add_parser("set")
    change.add_argument("model")
    change.add_argument(
        "--split",
        type=_split,
        required=True,
        help=f"VERSION=WEIGHT,... (weights 0 to {MAX_WEIGHT})",
    )
    change.add_argument("--shadow", type=_shadows, default=[], help="VERSION=PERCENT,...")
    change.add_argument("--no-sticky", action="store_true", help="random split even with a key")
    change.add_argument("--reason", type=_reason, default="", help=_REASON_HELP)
    change.add_argument("--expected-revision", type=int, help="write only at this revision")
    add_wait_arguments(change)
    history = actions.add_parser("history")
    history.add_argument("model")
    history.add_argument("--limit", type=int, default=20)
    status = actions.add_parser("status", help="which gateway serves which revision")
    status.add_argument("model")
    rollback = actions.add_parser("rollback")
    rollback.add_argument("model")
    rollback.add_argument("--to-revision", type=int, required=True)
    rollback.add_argument("--reason", type=_reason, default="", help=_REASON_HELP)
    rollback.add_argument("--expected-revision", type=int)
    add_wait_arguments(rollback)
    add_rollout_parser(commands, _duration, _reason)
    return parser


def _table(rows: Sequence[Sequence[object]], header: Sequence[str], out: TextIO) -> None:
    print_table([header, *rows], out)


def _rule_view(rule: RouteRule) -> dict[str, Any]:
    view: dict[str, Any] = json.loads(rule.to_json())
    return view


def _print_rule(rule: RouteRule, out: TextIO) -> None:
    total = sum(s.weight for s in rule.split)
    print(f"model {printable(rule.model)}  revision {rule.revision}  sticky {rule.sticky}",
          file=out)  # fmt: skip
    rows: list[list[object]] = [
        [s.version, "split", s.weight, f"{100 * s.weight / total:.1f}%"] for s in rule.split
    ]
    rows += [[s.version, "shadow", "-", f"{s.percent:g}% mirrored"] for s in rule.shadows]
    _table(rows, ["version", "role", "weight", "share"], out)
    print(f"updated by {printable(rule.updated_by)} at {printable(rule.updated_at)}:"
          f" {printable(rule.reason)}", file=out)  # fmt: skip


def _run(
    args: argparse.Namespace, client: RegistryClient, actor: str, out: TextIO, err: TextIO
) -> int:
    """Run the command; returns the exit code of a write that gateways did not apply, else 0
    (errors are raised)."""
    emit_json = args.json
    if args.command == "models":
        models = {name: client.show_model(name) for name in client.list_models()}
        if emit_json:
            print(json.dumps(models), file=out)
        else:
            rows = [
                [name, m.get("owner", ""), len(m["versions"]), m.get("description", "")]
                for name, m in models.items()
            ]
            _table(rows, ["model", "owner", "versions", "description"], out)
    elif args.command == "model":
        if args.action == "create":
            tags = None if args.tags is None else [t for t in args.tags.split(",") if t]
            client.create_model(args.name, actor=actor, owner=args.owner,
                                description=args.description, tags=tags,
                                batch_delay_us=args.batch_delay_us,
                                max_batch_size=args.max_batch_size)  # fmt: skip
        shown = client.show_model(args.name)
        if emit_json:
            print(json.dumps(shown), file=out)
        else:
            _table([[k, v] for k, v in shown.items()], ["field", "value"], out)
    elif args.command == "versions":
        listed = [client.show_version(args.model, v) | {"version": v}
                  for v in client.list_versions(args.model)]  # fmt: skip
        if emit_json:
            print(json.dumps(listed), file=out)
        else:
            rows = [[v["version"], v["status"], v["sha256"][:12], v["size"], v["created_by"],
                     v["created_at"]] for v in listed]  # fmt: skip
            _table(rows, ["version", "status", "sha256", "bytes", "by", "at"], out)
    elif args.command == "register":
        lineage = dict(_pairs(args.lineage, "--lineage"))
        if args.create_model:
            client.create_model(args.model, actor=actor)
        stored = client.register_version(
            args.model, args.version, args.file, actor=actor, description=args.description,
            lineage=lineage, metrics=args.metrics, upload=args.upload,
            tags=[t for t in args.tags.split(",") if t],
            feature_names=dict(args.feature_names), max_bytes=args.max_artifact_bytes,
        )  # fmt: skip
        if emit_json:
            print(json.dumps(stored), file=out)
        else:
            print(f"registered {printable(args.model)} version {printable(args.version)} sha256"
                  f" {printable(stored['sha256'])}", file=out)  # fmt: skip
    elif args.command == "version-status":
        client.set_version_status(args.model, args.version, args.status, actor=actor)
        print(f"{printable(args.model)} version {printable(args.version)}: {args.status}",
              file=out)  # fmt: skip
    elif args.command == "import":
        if not args.directory.is_dir():
            raise Rejected(f"{args.directory} is not a directory")
        found = client.import_repository(args.directory, actor=actor)
        if emit_json:
            print(json.dumps([{"model": m, "version": v} for m, v in found]), file=out)
        else:
            _table(found, ["model", "version"], out)
    elif args.command in ("reference", "drift"):
        run_drift_command(args, client, actor, out, err)
    elif args.command == "rollout":
        return run_rollout_command(args, client, actor, out, err)
    elif args.command == "compare":
        report = compare_versions(client, args.model, args.versions, args.since)
        if emit_json:
            print(json.dumps(report), file=out)
        else:
            print_comparison(report, out)
    else:
        return _run_route(args, client, actor, out, err)
    return EXIT_OK


def _version_state(state: dict[str, Any]) -> str:
    """`2:LOADING(35s)`, `1:READY(41MiB)`, `3:FAILED`: one version on one replica."""
    text = f"{state['version']}:{state['state']}"
    if state["state"] == "LOADING" and state["loading_seconds"] is not None:
        return f"{text}({state['loading_seconds']:.0f}s)"
    if state["state"] == "READY" and state["memory_bytes"] is not None:
        return f"{text}({state['memory_bytes'] / 2**20:.0f}MiB)"
    return text


def _audited_revision(after: str) -> object:
    """The revision in an audit entry's `after` (a rule document), "" when there is none."""
    try:
        document = json.loads(after) if after else {}
    except ValueError:  # an entry written by another tool
        return "?"
    return document.get("revision", "") if isinstance(document, dict) else "?"


def _run_route(
    args: argparse.Namespace, client: RegistryClient, actor: str, out: TextIO, err: TextIO
) -> int:
    if args.action == "history":
        entries = client.history(args.model, limit=args.limit)
        if args.json:
            print(json.dumps(entries), file=out)
            return EXIT_OK
        rows = [[e.get("when", ""), e.get("who", ""), e.get("action", ""),
                 _audited_revision(e.get("after", "")), e.get("reason", "")]
                for e in entries]  # fmt: skip
        _table(rows, ["when", "who", "action", "revision", "reason"], out)
        return EXIT_OK
    if args.action == "status":
        report = client.replica_status(args.model)
        if args.json:
            print(json.dumps(report), file=out)
            return EXIT_OK
        print(f"model {printable(args.model)}  rule revision {report['revision']}", file=out)
        rows = [
            [r["replica"], r["applied_revision"], r["target_revision"] or "-",
             " ".join(_version_state(v) for v in r["version_states"]),
             "; ".join(f"{v}: {why}" for v, why in r["failed"].items()) or r["error"] or "-"]
            for r in report["replicas"]
        ]  # fmt: skip
        _table(rows, ["replica", "applied", "working towards", "versions", "problems"], out)
        return EXIT_OK
    if args.action == "show":
        shown = client.get_route(args.model)
        if shown is None:
            raise Rejected(f"model {args.model!r} has no rule: set one with gatectl route set")
        if args.json:
            print(json.dumps(_rule_view(shown)), file=out)
        else:
            _print_rule(shown, out)
        return EXIT_OK
    if args.action == "set":
        rule = client.set_route(
            args.model, args.split, args.shadow, actor=actor, reason=args.reason,
            sticky=not args.no_sticky, expected_revision=args.expected_revision,
        )  # fmt: skip
    else:
        rule = client.rollback(args.model, args.to_revision, actor=actor, reason=args.reason,
                               expected_revision=args.expected_revision)  # fmt: skip
    return show_and_wait(client, rule.model, rule.revision, args.wait, _rule_view(rule),
                         lambda to: _print_rule(rule, to), out, err,
                         emit_json=args.json)  # fmt: skip


def _data_dir(env: Mapping[str, str]) -> Path:
    """Where the gateway started with the same environment keeps its private Redis."""
    configured = env.get(DATA_DIR_VARIABLE)
    return Path(configured) if configured else default_data_dir(env)


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Entry point of the `gatectl` console script; returns the exit code."""
    env = os.environ if env is None else env
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    url = args.redis_url or env.get(REDIS_URL_VARIABLE)
    if not url:
        data_dir = args.data_dir or _data_dir(env)
        if not (data_dir / PRIVATE_SOCKET_NAME).exists():
            print(
                f"gatectl: no Redis: pass --redis-url, set {REDIS_URL_VARIABLE}, or start"
                f" `onnxgate serve` so that its private Redis runs in {data_dir}",
                file=err,
            )
            return EXIT_USAGE
        url = private_redis_url(data_dir)
    actor = args.actor or env.get("USER") or getpass.getuser()
    try:
        validate_actor(actor, "--actor" if args.actor else "the login name (the default --actor)")
    except SchemaError as exc:
        print(f"gatectl: {printable(exc)}", file=err)
        return EXIT_USAGE
    namespace = args.namespace or env.get(NAMESPACE_VARIABLE) or DEFAULT_NAMESPACE
    try:
        client = RegistryClient.from_url(url, namespace)
    except Rejected as exc:
        print(f"gatectl: {printable(exc)}", file=err)
        return EXIT_REJECTED
    try:
        return _run(args, client, actor, out, err)
    except Rejected as exc:
        print(f"gatectl: {printable(exc)}", file=err)
        return EXIT_REJECTED
    except SchemaError as exc:  # a document in Redis that is not valid (written by hand)
        print(f"gatectl: unreadable document in the registry: {printable(exc)}", file=err)
        return EXIT_REJECTED
    except Conflict as exc:
        print(f"gatectl: {printable(exc)}", file=err)
        return EXIT_CONFLICT
    except Unreachable as exc:
        print(f"gatectl: {printable(exc)}", file=err)
        return EXIT_UNREACHABLE
    finally:
        client.close()
