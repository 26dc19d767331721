"""`onnxgate serve ...`: flags over Settings.from_env, then app.serve()."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from gateway.api.probe import probe
from gateway.app import serve
from gateway.process.supervisor import supervise
from gateway.security.material import Security, SecurityError
from gateway.settings import Settings, SettingsError
from gateway.settings.checks import first_problem
from gateway.settings.declaration import REGISTRY
from gateway.settings.flags import add_setting_flags
from registry_client.connection import default_data_dir

__all__ = ["main", "parse_settings"]

_SERVE_EPILOG = (
    "Each setting can also come from the environment variable in [env ...] (flags win). Any"
    " other ONNXGATE_* variable is refused (exit 2) rather than ignored, so a misspelt one"
    " cannot pass unnoticed."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnxgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "serve", help="serve ONNX models over the inference protocol", epilog=_SERVE_EPILOG
    )
    groups = add_setting_flags(run)
    groups[REGISTRY].add_argument(
        "--no-registry", action="store_true",
        help="serve --models directly, without a registry or routing rules",
    )  # fmt: skip
    check = commands.add_parser("probe", help="exit 0 when the gateway's health is SERVING")
    check.add_argument("--address", default="127.0.0.1:8001", help="gRPC address")
    check.add_argument("--service", default="", help="health service name ('' = whole server)")
    check.add_argument("--timeout", type=float, default=2.0, help="seconds to wait")
    check.add_argument("--tls", action="store_true", help="speak TLS (system CAs by default)")
    check.add_argument("--ca-cert", type=Path, help="PEM CA that signed the server (implies --tls)")
    check.add_argument("--client-cert", type=Path, help="PEM client certificate, for mutual TLS")
    check.add_argument("--client-key", type=Path, help="PEM key of --client-cert")
    return parser


def parse_settings(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """Settings from the environment, overridden by the flags given."""
    args = vars(_parser().parse_args(argv))
    if args.pop("command") != "serve":
        _parser().error("expected the serve command")
    no_registry = args.pop("no_registry")
    try:
        settings = Settings.from_env(env).with_overrides(**args)
    except SettingsError as exc:
        _parser().error(str(exc))
    if no_registry:
        return replace(settings, redis_url=None, data_dir=None)
    if settings.redis_url is None and settings.data_dir is None:
        return replace(settings, data_dir=default_data_dir(env))
    return settings


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point of the `onnxgate` console script: the only reader of argv and environ."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        args = _parser().parse_args(argv)
        files = (args.ca_cert, args.client_cert, args.client_key)
        tls = files if args.tls or any(files) else None
        try:
            return probe(args.address, args.service, args.timeout, tls)
        except OSError as exc:
            print(f"onnxgate probe: {exc.filename}: {exc.strerror}", file=sys.stderr)
            return 2
    settings = parse_settings(argv, os.environ if env is None else env)
    problem = first_problem(settings)
    if problem is not None:
        print(f"onnxgate: {problem}", file=sys.stderr)
        return 2
    try:
        Security.from_settings(settings)  # checked before anything starts, as flags are
    except SecurityError as exc:
        print(f"onnxgate: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        return supervise(settings)
    return serve(settings)
