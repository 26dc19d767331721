"""Settings, read once: from the environment by Settings.from_env, then from flags in cli."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

__all__ = ["ENV_PREFIX", "OTHER_VARIABLES", "Settings", "SettingsError", "env_variable"]

ENV_PREFIX = "ONNXGATE_"
# ONNXGATE_* variables that are not settings yet may be in a gateway's environment; every
# other one is refused, so a misspelt setting cannot be silently ignored. The test harness's
# tritonclient virtualenv is inherited by the gateway processes the tests start.
OTHER_VARIABLES = frozenset({"ONNXGATE_TRITON_VENV"})


class SettingsError(ValueError):
    """Raised for a setting with a value of the wrong kind; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway can be told; tests build it directly.

    Each field can be set by the environment variable ONNXGATE_<FIELD NAME IN CAPITALS>.
    """

    models: Path | None = None
    host: str = "0.0.0.0"
    grpc_port: int = 8001
    metrics_port: int = 8002  # 0: pick a free port; -1: no metrics endpoint
    grpc_threads: int = 4  # measured: 8 lost 5-10% to 4 on one core (benchmarks/RESULTS.md)
    # A ModelStreamInfer stream holds a thread while open (grpcio's synchronous server), so
    # streams get threads of their own, this many at once; more are RESOURCE_EXHAUSTED.
    max_streams: int = 16
    # The longest a request may wait for a thread and a model: a client's longer or missing
    # deadline is cut to it, so nothing waits forever behind a stuck model.
    request_timeout_seconds: float = 60.0
    # HTTP/2 streams one connection may have open at once.
    max_streams_per_connection: int = 128
    # Calls in progress at once (waiting for their request message, for a thread, for a turn
    # or running); more are refused RESOURCE_EXHAUSTED at once. Threads beyond grpc_threads +
    # max_streams exist only for calls waiting for their request message.
    max_calls: int = 1000
    # A call's request message must arrive within this long of its thread starting to wait for
    # it, whatever its deadline, or it ends DEADLINE_EXCEEDED: headers without a body cannot
    # hold a thread.
    receive_timeout_seconds: float = 10.0
    # Client connections open at once; the transport closes more at once.
    max_connections: int = 1000
    # A connection without calls this long is closed (GOAWAY); its client reconnects on its
    # next call.
    idle_connection_seconds: float = 300.0
    # A new connection must complete its TLS and HTTP/2 handshakes within this long.
    handshake_timeout_seconds: float = 10.0
    # The server pings a connection idle this long and closes it when no answer comes within
    # keepalive_timeout_seconds: a vanished client's stream gives its thread back.
    keepalive_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0
    # Clients may ping this often, no more (gRPC's default is 5 minutes, which cuts off any
    # client with keepalive on); the third faster ping closes their connection (GOAWAY).
    min_client_ping_seconds: float = 10.0
    max_message_bytes: int = 256 * 1024 * 1024
    # TLS on the gRPC port when a certificate and key are given; with a client CA as well,
    # callers must present a certificate it signed (mutual TLS).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    auth_tokens_file: Path | None = None  # bearer tokens and their scopes (api/tokens.py)
    metrics_tls: bool = False  # /metrics over the gRPC port's TLS settings
    metrics_auth: bool = False  # /metrics only for tokens with the `metrics` scope
    ort_intra_op_threads: int = 1
    ort_inter_op_threads: int = 1
    load_threads: int = 2  # versions loading at once; each load runs on a thread of its own
    # One load (fetch, memory probe, session creation and warm-up) gets this long; a warm-up
    # still running then is terminated and the version FAILED, a hung creation abandoned.
    load_timeout_seconds: float = 120.0
    # A version's load and warm-up is first run in a short-lived child process limited to this
    # much memory above its start; it loads here only when that probe passes. -1: a quarter of
    # the machine's (or the cgroup's) memory; 0: no probe.
    max_version_memory_bytes: int = -1
    # A shadow run still going this long after it started is terminated (counted, not compared).
    shadow_timeout_seconds: float = 5.0
    # Share of requests (0-1) logged as one access-log line each; 0: none.
    access_log_sample: float = 0.0
    # Processes serving one port (SO_REUSEPORT) under a supervisor; a worker is told how many
    # siblings it has, for its share of the CPUs and its metrics mode.
    workers: int = 1
    max_batch_size: int = 1024
    max_model_bytes: int = 2**31 - 1  # larger artifacts are refused unread (FAILED)
    max_inflight_per_version: int = 64
    # > 0: a version runs at most this many requests at once (Triton's instance count); up to
    # max_queue_per_version more wait, each until its deadline; beyond that, UNAVAILABLE.
    max_concurrency_per_version: int = 0
    max_queue_per_version: int = 64
    # Dynamic batching of versions with a dynamic batch dimension: -1 off; else concurrent
    # requests are run together, waiting at most this many microseconds for more.
    batch_delay_us: int = -1
    shutdown_grace_seconds: float = 30.0
    # On SIGTERM, health says NOT_SERVING this long before intake closes, requests still being
    # served, so balancers and health-checking clients stop sending first; it is taken from
    # the grace period (at most half of it).
    drain_notice_seconds: float = 1.0
    redis_url: str | None = None  # follow the registry's rules in this Redis
    data_dir: Path | None = None  # without redis_url: a private redis-server lives here
    namespace: str = "onnxgate"
    replica_id: str = ""  # heartbeat name; empty: <hostname>-<pid>
    rules_poll_seconds: float = 2.0  # epoch poll, the backstop for lost pub/sub hints
    heartbeat_seconds: float = 5.0
    shadow_queue_size: int = 1000  # mirrored copies waiting; beyond it they are dropped
    shadow_workers: int = 1
    shadow_nice: int = 19  # shadow threads' priority; 0 = the same as the primaries'
    shadow_max_cpu_busy: float = 0.85  # shed shadow copies above this use of our CPUs; 1 = never
    stats_flush_seconds: float = 10.0  # per-version statistics written to Redis this often
    stats_retention_seconds: int = 86400  # how long those 1-minute windows stay in Redis
    drift_buffer_rows: int = 65536  # input rows waiting to be sketched; 0 turns drift off
    drift_flush_seconds: float = 10.0
    drift_minute_ttl_seconds: int = 3600  # 1-minute sketch windows; gatectl's default too
    drift_hour_ttl_seconds: int = 8 * 86400
    drift_monitor_seconds: float = 60.0  # reference bins and drift gauges refreshed this often
    drift_monitor_window_seconds: float = 900.0  # the gauges' window
    # Every gateway runs a rollout controller; the one holding the lease (a Redis key with this
    # TTL, renewed every tick) drives rollouts. Off for a gateway whose Redis user may only read.
    rollout_controller: bool = True
    rollout_tick_seconds: float = 1.0
    rollout_lease_seconds: float = 10.0
    # POSTed on promote, rollback and pause, signed with HMAC-SHA256 of the secret in the file.
    rollout_webhook_url: str = ""
    rollout_webhook_secret_file: Path | None = None
    log_level: str = "INFO"
    log_format: str = "json"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Defaults overridden by ONNXGATE_* variables; SettingsError names a bad one, or an
        ONNXGATE_* variable that is neither a setting nor in OTHER_VARIABLES."""
        _refuse_unknown(env)
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(env_variable(f.name))
            if raw is not None:
                values[f.name] = _convert(f.name, str(f.type), raw)
        return cls(**values)  # type: ignore[arg-type]  # converted per field type above

    def to_env(self) -> dict[str, str]:
        """The ONNXGATE_* variables from which from_env rebuilds these settings exactly."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                env[env_variable(f.name)] = repr(value) if isinstance(value, float) else str(value)
        return env

    def with_overrides(self, **overrides: object) -> Settings:
        """A copy with the given fields replaced (None values are ignored)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **changes)  # type: ignore[arg-type]  # argparse types match fields


def env_variable(field: str) -> str:
    """The environment variable of a Settings field: ONNXGATE_<FIELD IN CAPITALS>."""
    return ENV_PREFIX + field.upper()


def _refuse_unknown(env: Mapping[str, str]) -> None:
    """SettingsError naming an unknown ONNXGATE_* variable and the setting it is closest to."""
    known = {env_variable(f.name) for f in fields(Settings)}
    allowed = known | OTHER_VARIABLES
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in allowed)
    if not unknown:
        return
    name = unknown[0]
    # Compared without the shared prefix, which would make every name look alike.
    suffixes = [variable.removeprefix(ENV_PREFIX) for variable in sorted(known)]
    nearest = difflib.get_close_matches(name.removeprefix(ENV_PREFIX).upper(), suffixes, n=1)
    message = f"unknown environment variable {name}"
    if nearest:
        message += f"; did you mean {ENV_PREFIX}{nearest[0]}?"
    else:
        message += ": not a setting (onnxgate serve --help names each flag's variable)"
    if len(unknown) > 1:
        message += f" (and {len(unknown) - 1} more: {', '.join(unknown[1:])})"
    raise SettingsError(message)


def _convert(name: str, annotation: str, raw: str) -> object:
    variable = env_variable(name)
    try:
        if annotation == "int":
            return int(raw)
        if annotation == "float":
            return float(raw)
        if annotation.startswith("Path"):
            return Path(raw)
        if annotation == "bool":
            return _boolean(raw)
    except ValueError as exc:
        raise SettingsError(f"{variable}={raw!r}: expected {annotation}") from exc
    return raw


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)
