"""`onnxgate serve ...`: flags over Settings.from_env, then app.serve()."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path

from gateway.api.probe import probe
from gateway.app import serve
from gateway.process.supervisor import supervise
from gateway.security.material import Security, SecurityError
from gateway.settings import Settings, SettingsError, env_variable
from registry_client.schema import default_data_dir

__all__ = ["main", "parse_settings"]

# (flag, setting, smallest value that works): zero request threads would serve nothing.
_AT_LEAST = (("--workers", "workers", 1), ("--grpc-threads", "grpc_threads", 1),
             ("--max-streams", "max_streams", 0),
             ("--request-timeout-seconds", "request_timeout_seconds", 0.001),
             ("--max-streams-per-connection", "max_streams_per_connection", 1),
             ("--receive-timeout-seconds", "receive_timeout_seconds", 0.001),
             ("--max-connections", "max_connections", 1),
             ("--idle-connection-seconds", "idle_connection_seconds", 0.001),
             ("--handshake-timeout-seconds", "handshake_timeout_seconds", 0.001),
             ("--load-threads", "load_threads", 1),
             ("--load-timeout-seconds", "load_timeout_seconds", 0.001),
             ("--max-version-memory-bytes", "max_version_memory_bytes", -1),
             ("--shadow-timeout-seconds", "shadow_timeout_seconds", 0.001),
             ("--access-log-sample", "access_log_sample", 0.0),
             ("--max-model-bytes", "max_model_bytes", 1),
             ("--max-inflight-per-version", "max_inflight_per_version", 1),
             ("--max-concurrency-per-version", "max_concurrency_per_version", 0),
             ("--max-queue-per-version", "max_queue_per_version", 0),
             ("--keepalive-seconds", "keepalive_seconds", 0.001),
             ("--keepalive-timeout-seconds", "keepalive_timeout_seconds", 0.001),
             ("--min-client-ping-seconds", "min_client_ping_seconds", 0.0),
             ("--drain-notice-seconds", "drain_notice_seconds", 0.0),
             ("--rollout-tick-seconds", "rollout_tick_seconds", 0.01),
             ("--rollout-lease-seconds", "rollout_lease_seconds", 0.1))  # fmt: skip
MIN_VERSION_MEMORY_BYTES = 64 * 2**20
# (flag, setting, largest value that means something): a share is at most all of them.
_AT_MOST = (("--access-log-sample", "access_log_sample", 1.0),)
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
    run.add_argument(
        "--models", type=Path, help="Triton-style repository: DIR/<model>/<version>/model.onnx"
    )
    run.add_argument("--host", help="address to bind (default 0.0.0.0)")
    run.add_argument("--grpc-port", type=int, help="gRPC port (default 8001; 0 picks one)")
    run.add_argument("--metrics-port", type=int, help="Prometheus port (default 8002; -1 none)")
    run.add_argument("--grpc-threads", type=int, help="request threads (default 4)")
    run.add_argument(
        "--max-streams", type=int,
        help="ModelStreamInfer streams open at once, each on a thread of its own (16)",
    )  # fmt: skip
    run.add_argument(
        "--request-timeout-seconds", type=float,
        help="deadline for requests without one, and cap on longer ones (60)",
    )  # fmt: skip
    run.add_argument(
        "--max-model-bytes", type=int, help="larger model files are refused (2 GiB - 1)"
    )
    run.add_argument(
        "--max-streams-per-connection", type=int,
        help="HTTP/2 streams one client connection may have open at once (128)",
    )  # fmt: skip
    run.add_argument(
        "--max-calls", type=int,
        help="calls in progress at once; more are RESOURCE_EXHAUSTED at once (1000)",
    )  # fmt: skip
    run.add_argument(
        "--receive-timeout-seconds", type=float,
        help="a call's request message must arrive this soon after its thread waits for it (10)",
    )  # fmt: skip
    run.add_argument(
        "--max-connections", type=int,
        help="client connections open at once; more are closed at once (1000)",
    )  # fmt: skip
    run.add_argument(
        "--idle-connection-seconds", type=float,
        help="close connections without calls this long (GOAWAY) (300)",
    )  # fmt: skip
    run.add_argument(
        "--handshake-timeout-seconds", type=float,
        help="a new connection's TLS and HTTP/2 handshakes must end this soon (10)",
    )  # fmt: skip
    run.add_argument(
        "--keepalive-seconds", type=float,
        help="ping connections idle this long; close them unanswered after"
             " --keepalive-timeout-seconds (60, 20)",
    )  # fmt: skip
    run.add_argument("--keepalive-timeout-seconds", type=float, help="see --keepalive-seconds (20)")
    run.add_argument(
        "--min-client-ping-seconds", type=float,
        help="clients pinging more often are disconnected (GOAWAY too_many_pings) (10)",
    )  # fmt: skip
    run.add_argument(
        "--workers", type=int,
        help="gateway processes sharing the port, supervised and restarted (default 1)",
    )  # fmt: skip
    run.add_argument("--max-message-bytes", type=int, help="largest request/response (256 MiB)")
    run.add_argument(
        "--tls-cert",
        dest="tls_cert_file",
        type=Path,
        help="PEM certificate chain: serve gRPC over TLS (with --tls-key)",
    )
    run.add_argument("--tls-key", dest="tls_key_file", type=Path, help="PEM private key")
    run.add_argument(
        "--tls-client-ca",
        dest="tls_client_ca_file",
        type=Path,
        help="PEM CA bundle: require client certificates it signed (mutual TLS)",
    )
    run.add_argument(
        "--auth-tokens-file",
        type=Path,
        help="bearer tokens, one 'NAME SCOPES TOKEN' per line (scopes: infer,"
        " admin, metrics); calls without a known token are refused",
    )
    run.add_argument(
        "--metrics-tls",
        action="store_true",
        default=None,
        help="serve /metrics over TLS with --tls-cert/--tls-key/--tls-client-ca",
    )
    run.add_argument(
        "--metrics-auth",
        action="store_true",
        default=None,
        help="/metrics only for tokens with the 'metrics' scope",
    )
    run.add_argument("--ort-intra-op-threads", type=int, help="onnxruntime threads per run (1)")
    run.add_argument("--ort-inter-op-threads", type=int, help="onnxruntime inter-op threads (1)")
    run.add_argument("--max-batch-size", type=int, help="largest batch a request may carry (1024)")
    run.add_argument(
        "--max-inflight-per-version", type=int, help="admission limit per version (64)"
    )
    run.add_argument(
        "--max-concurrency-per-version", type=int,
        help="requests of one version running at once; 0: no limit of its own (default)",
    )  # fmt: skip
    run.add_argument(
        "--max-queue-per-version", type=int,
        help="with --max-concurrency-per-version: requests that may wait beyond it (64)",
    )  # fmt: skip
    run.add_argument(
        "--batch-delay-us", type=int,
        help="dynamic batching: -1 off (default); else wait at most this long for more requests",
    )  # fmt: skip
    run.add_argument("--load-threads", type=int, help="versions loading at once (2)")
    run.add_argument(
        "--load-timeout-seconds", type=float,
        help="a version's fetch, probe, creation and warm-up get this long, then FAILED (120)",
    )  # fmt: skip
    run.add_argument(
        "--max-version-memory-bytes", type=int,
        help="probe each version in a child process with this memory budget first;"
             " -1: a quarter of the machine's memory (default); 0: no probe",
    )  # fmt: skip
    run.add_argument(
        "--shadow-timeout-seconds", type=float,
        help="a shadow run still going this long is terminated (5)",
    )  # fmt: skip
    run.add_argument(
        "--access-log-sample", type=float,
        help="share of requests (0-1) logged on one access-log line each; 0: none (default)",
    )  # fmt: skip
    run.add_argument("--shutdown-grace-seconds", type=float, help="drain time on SIGTERM (30)")
    run.add_argument(
        "--drain-notice-seconds", type=float,
        help="on SIGTERM, NOT_SERVING this long before new RPCs are refused (1)",
    )  # fmt: skip
    run.add_argument("--redis-url", help="follow the registry's routing rules in this Redis")
    run.add_argument(
        "--data-dir", type=Path,
        help="without --redis-url: run a private redis-server here (~/.local/share/onnxgate)",
    )  # fmt: skip
    run.add_argument(
        "--no-registry", action="store_true",
        help="serve --models directly, without a registry or routing rules",
    )  # fmt: skip
    run.add_argument("--namespace", help="registry key namespace (onnxgate)")
    run.add_argument("--replica-id", help="name in heartbeats (default <hostname>-<pid>)")
    run.add_argument("--rules-poll-seconds", type=float, help="epoch poll interval (2)")
    run.add_argument("--heartbeat-seconds", type=float, help="heartbeat interval (5)")
    run.add_argument("--shadow-queue-size", type=int, help="mirrored copies waiting (1000)")
    run.add_argument("--shadow-workers", type=int, help="threads running shadows (1)")
    run.add_argument(
        "--shadow-nice", type=int, help="shadow threads' nice value, 0-19 (19: idle CPU only)"
    )
    run.add_argument(
        "--stats-flush-seconds", type=float, help="per-version statistics write interval (10)"
    )
    run.add_argument(
        "--stats-retention-seconds", type=int, help="per-version statistics kept (86400)"
    )
    run.add_argument(
        "--shadow-max-cpu-busy", type=float,
        help="drop shadow copies while the process uses more than this share of its CPUs (0.85)",
    )  # fmt: skip
    run.add_argument(
        "--drift-buffer-rows", type=int, help="input rows waiting to be sketched; 0: off (65536)"
    )
    run.add_argument("--drift-flush-seconds", type=float, help="sketch write interval (10)")
    run.add_argument("--drift-minute-ttl-seconds", type=int, help="minute sketches kept (3600)")
    run.add_argument("--drift-hour-ttl-seconds", type=int, help="hourly sketches kept (8 days)")
    run.add_argument(
        "--drift-monitor-seconds", type=float, help="drift gauges and reference refresh (60)"
    )
    run.add_argument(
        "--drift-monitor-window-seconds", type=float, help="window of the drift gauges (900)"
    )
    run.add_argument(
        "--no-rollout-controller", dest="rollout_controller", action="store_false", default=None,
        help="take no part in driving rollouts (for a Redis user that may only read)",
    )  # fmt: skip
    run.add_argument(
        "--rollout-tick-seconds", type=float, help="rollout controller's tick and lease renewal (1)"
    )
    run.add_argument(
        "--rollout-lease-seconds", type=float,
        help="leader lease TTL: another gateway takes over this long after the leader dies (10)",
    )  # fmt: skip
    run.add_argument(
        "--rollout-webhook-url", help="POST rollout promotions, rollbacks and pauses here"
    )
    run.add_argument(
        "--rollout-webhook-secret-file", type=Path,
        help="HMAC-SHA256 key of the webhook's X-Onnxgate-Signature (at least 16 bytes)",
    )  # fmt: skip
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (INFO)")
    run.add_argument("--log-format", choices=["json", "text"], help="log line format (json)")
    _name_variables(run)
    check = commands.add_parser("probe", help="exit 0 when the gateway's health is SERVING")
    check.add_argument("--address", default="127.0.0.1:8001", help="gRPC address")
    check.add_argument("--service", default="", help="health service name ('' = whole server)")
    check.add_argument("--timeout", type=float, default=2.0, help="seconds to wait")
    check.add_argument("--tls", action="store_true", help="speak TLS (system CAs by default)")
    check.add_argument("--ca-cert", type=Path, help="PEM CA that signed the server (implies --tls)")
    check.add_argument("--client-cert", type=Path, help="PEM client certificate, for mutual TLS")
    check.add_argument("--client-key", type=Path, help="PEM key of --client-cert")
    return parser


def _name_variables(parser: argparse.ArgumentParser) -> None:
    """Append its environment variable to the help of each flag that sets a Settings field,
    from the same name mapping from_env reads, so the two cannot disagree."""
    settings = {f.name for f in fields(Settings)}
    for action in parser._actions:  # argparse has no public iterator over its actions
        if action.dest in settings and action.help is not None:
            action.help += f" [env {env_variable(action.dest)}]"


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
    if settings.models is not None and not settings.models.is_dir():
        print(f"onnxgate: --models {settings.models}: not a directory", file=sys.stderr)
        return 2
    for flag, value, least in _AT_LEAST:
        if getattr(settings, value) < least:
            print(f"onnxgate: {flag} {getattr(settings, value)}: expected {least} or more",
                  file=sys.stderr)  # fmt: skip
            return 2
    for flag, value, most in _AT_MOST:
        if not getattr(settings, value) <= most:  # not `>`: NaN is refused as well
            print(f"onnxgate: {flag} {getattr(settings, value)}: expected {most} or less",
                  file=sys.stderr)  # fmt: skip
            return 2
    budget = settings.max_version_memory_bytes
    if 0 < budget < MIN_VERSION_MEMORY_BYTES:
        # Below this onnxruntime can fail its own allocations in ways that hang it.
        print(f"onnxgate: --max-version-memory-bytes {budget}: expected -1 (a quarter of the"
              f" memory), 0 (no probe) or at least {MIN_VERSION_MEMORY_BYTES}",
              file=sys.stderr)  # fmt: skip
        return 2
    lasting_threads = settings.grpc_threads + settings.max_streams
    if settings.max_calls < lasting_threads:
        print(f"onnxgate: --max-calls {settings.max_calls}: expected at least --grpc-threads"
              f" + --max-streams ({lasting_threads}), the threads that always exist",
              file=sys.stderr)  # fmt: skip
        return 2
    if settings.rollout_lease_seconds <= 2 * settings.rollout_tick_seconds:
        print(f"onnxgate: --rollout-lease-seconds {settings.rollout_lease_seconds}: expected"
              f" more than twice --rollout-tick-seconds ({settings.rollout_tick_seconds}), or"
              " the leader's lease lapses between its renewals", file=sys.stderr)  # fmt: skip
        return 2
    try:
        Security.from_settings(settings)  # checked before anything starts, as flags are
    except SecurityError as exc:
        print(f"onnxgate: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        return supervise(settings)
    return serve(settings)
