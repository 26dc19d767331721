"""gatectl manages what onnxgate gateways follow: models, versions, routing rules, rollouts.

The command-line interface of RegistryClient: every check and write is the client's, so a
Python program can do whatever gatectl does, with the same validation. This module is the
entry point: the global flags and their environment variables, finding Redis, running the
handler the command line chose and mapping the registry errors it raises to exit codes
(exit_codes.py lists them). Each command group builds its subcommands next to its handlers:
models.py, versions.py, version_record.py, measurements.py, labels.py, evaluate.py,
compare.py, quality.py (accuracy, fairness), drift.py, routes.py, rollout.py, events.py,
backup.py (export, restore) and completion.py; aliases.py keeps old spellings working, hidden,
and reference.py writes docs/gatectl-reference.md from the parser build_parser() makes.

What gatectl prints but did not write (anything read from Redis) goes through
tables.printable(): control and format characters show as escapes, never reach the terminal.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TextIO

from registry_client.cli import (
    aliases,
    backup,
    compare,
    completion,
    declarative,
    drift,
    evaluate,
    events,
    labels,
    measurements,
    models,
    quality,
    rollout,
    routes,
    version_record,
    versions,
)
from registry_client.cli.arguments import actor_name
from registry_client.cli.context import CommandContext, Handler
from registry_client.cli.exit_codes import (
    EXIT_CONFLICT,
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from registry_client.cli.parser import GatectlParser, wants_json
from registry_client.cli.tables import printable
from registry_client.client import RegistryClient
from registry_client.connection import PRIVATE_SOCKET_NAME, default_data_dir, private_redis_url
from registry_client.errors import Conflict, Rejected, Unreachable
from registry_client.schema import MAX_ACTOR_CHARS, SchemaError, validate_actor

__all__ = ["build_parser", "main"]

# The gateway's own variables for these settings, so one environment serves both.
REDIS_URL_VARIABLE = "ONNXGATE_REDIS_URL"
NAMESPACE_VARIABLE = "ONNXGATE_NAMESPACE"
DATA_DIR_VARIABLE = "ONNXGATE_DATA_DIR"
DEFAULT_NAMESPACE = "onnxgate"
# In the order `gatectl --help` lists their commands.
COMMAND_GROUPS = (models, versions, version_record, measurements, labels, evaluate, compare,
                  quality, drift, routes, declarative, rollout, events, backup,
                  completion)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """gatectl's whole command line: global flags, every command group, the hidden aliases."""
    parser = GatectlParser(prog="gatectl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gatectl {_version()}")
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
        "--actor", type=actor_name,
        help=f"who is acting, for the audit (default: login name; at most {MAX_ACTOR_CHARS}"
        " characters, no control characters)",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_parsers(commands)
    aliases.add_parsers(commands)  # last: they hide among the commands added before
    return parser


def _version() -> str:
    try:
        return metadata.version("onnxgate")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _data_dir(env: Mapping[str, str]) -> Path:
    """Where the gateway started with the same environment keeps its private Redis."""
    configured = env.get(DATA_DIR_VARIABLE)
    return Path(configured) if configured else default_data_dir(env)


def _run(handler: Handler, args: argparse.Namespace, context: CommandContext) -> int:
    """The handler's exit code, or the one for the registry error it raised (said on err)."""
    err = context.err
    try:
        return handler(args, context)
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


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Entry point of the `gatectl` console script; returns the exit code."""
    env = os.environ if env is None else env
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if hasattr(args, "alias"):  # an old spelling: said again as the new one
        args = aliases.respell(parser, args, err)
    if getattr(args, "output_format", "") == "yaml" and not hasattr(args, "yaml_ok"):
        parser.error("-o yaml: only `gatectl get rules` writes YAML; use -o json")
    if hasattr(args, "offline"):  # a command that needs no Redis
        code: int = args.offline(parser, args, out)
        return code
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
    except ValueError as exc:  # redis-py's word on a URL it cannot parse (never echoed: secrets)
        source = "--redis-url" if args.redis_url else REDIS_URL_VARIABLE
        print(f"gatectl: {source}: {printable(exc)}", file=err)
        return EXIT_USAGE
    try:
        context = CommandContext(client, actor, out, err, wants_json(args))
        return _run(args.handler, args, context)
    finally:
        client.close()
