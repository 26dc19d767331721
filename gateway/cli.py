"""`onnxgate serve ...`: flags over Settings.from_env, then app.serve()."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from gateway.api.probe import ProbeTls, default_address, probe, tls_from_env
from gateway.process.build import build_info
from gateway.settings import Settings, SettingsError
from gateway.settings.checks import first_problem
from gateway.settings.declaration import REGISTRY
from gateway.settings.flags import add_setting_flags

__all__ = ["main", "parse_settings"]

_SERVE_EPILOG = (
    "Each setting can also come from the environment variable in [env ...] (flags win). Any"
    " other ONNXGATE_* variable is refused (exit 2) rather than ignored, so a misspelt one"
    " cannot pass unnoticed."
)


_PROBE_EPILOG = (
    "Exit codes: 0 SERVING; 1 not serving or unreachable; 2 a TLS file unreadable or a usage"
    " error. Without flags it probes the gateway its environment configures (ONNXGATE_HOST,"
    " ONNXGATE_GRPC_PORT), over TLS when ONNXGATE_TLS_CERT_FILE is set, trusting that"
    " certificate unless --ca-cert names the CA."
)


def _version() -> str:
    """onnxgate's version and what it serves with (package metadata: nothing imported)."""
    build = build_info()
    return (f"onnxgate {build['version']} (onnxruntime {build['onnxruntime']}, grpcio"
            f" {build['grpcio']}, Python {build['python']})")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnxgate", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "serve", help="serve ONNX models over the inference protocol", epilog=_SERVE_EPILOG
    )
    groups = add_setting_flags(run)
    groups[REGISTRY].add_argument(
        "--no-registry", action="store_true",
        help="serve --models directly, without a registry or routing rules",
    )  # fmt: skip
    check = commands.add_parser(
        "probe", help="exit 0 when the gateway's health is SERVING", epilog=_PROBE_EPILOG
    )
    check.add_argument("--address", help="gRPC address (default: ONNXGATE_HOST and"
                       " ONNXGATE_GRPC_PORT, else 127.0.0.1:8001)")  # fmt: skip
    check.add_argument("--service", default="", help="health service name: '' or"
                       " inference.GRPCInferenceService (ready), liveness (alive)")  # fmt: skip
    check.add_argument("--timeout", type=float, default=2.0, help="seconds to wait")
    check.add_argument("--tls", action="store_true", help="speak TLS (system CAs by default)")
    check.add_argument("--ca-cert", type=Path, help="PEM CA that signed the server (implies --tls)")
    check.add_argument("--client-cert", type=Path, help="PEM client certificate, for mutual TLS")
    check.add_argument("--client-key", type=Path, help="PEM key of --client-cert")
    check.add_argument("--server-name", help="name to check in the server's certificate"
                       " (default: the address' host)")  # fmt: skip
    return parser


def _probe(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """`onnxgate probe`: flags over what the gateway's own environment says."""
    args = _parser().parse_args(argv)
    tls = tls_from_env(env)
    given = {"ca": args.ca_cert, "client_cert": args.client_cert,
             "client_key": args.client_key, "server_name": args.server_name}  # fmt: skip
    if tls is None and (args.tls or any(given.values())):
        tls = ProbeTls()
    if tls is not None:
        tls = replace(tls, **{name: value for name, value in given.items() if value is not None})
    address = args.address or default_address(env)
    try:
        return probe(address, args.service, args.timeout, tls)
    except OSError as exc:
        print(f"onnxgate probe: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2


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
        from registry_client.connection import default_data_dir  # redis: not for the probe

        return replace(settings, data_dir=default_data_dir(env))
    return settings


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """The `onnxgate` command (gateway/command.py chose gRPC's transport first): the only
    reader of argv and environ."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    if argv[:1] == ["probe"]:
        return _probe(argv, env)
    settings = parse_settings(argv, env)  # exits on --help, --version and usage errors
    # Imported here, not above: the probe runs every few seconds and needs none of them.
    from gateway.app import serve
    from gateway.process.supervisor import supervise
    from gateway.security.material import Security, SecurityError

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
