"""Every setting of the gateway, each declared once: its concern, default, bounds and help.

The environment variable is ONNXGATE_<FIELD NAME IN CAPITALS> and the flag --<field-name>
unless the declaration names another. A help says what the setting does; its default and
variable are appended where it is shown (--help, docs/configuration.md).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from gateway.process.cgroups import available_cpus
from gateway.settings.concerns import CONCERNS
from gateway.settings.environment import read_env, write_env

__all__ = ["CONCERNS", "REGISTRY", "Settings"]

# Named in CONCERNS' order (concerns.py): a concern added there is added here too.
(SERVING, CONNECTIONS, SECURITY, MODELS, ADMISSION, SHUTDOWN, REGISTRY, SHADOWS, TELEMETRY,
 QUALITY, ROLLOUTS, LOGGING) = CONCERNS  # fmt: skip

# A default replica id, <hostname>-<pid>, is made of these (a Redis key part) and cut to 128.
_REPLICA_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway can be told; tests build it directly.

    A Concern call returns a dataclasses.field, not a shared default: RUF009 does not apply.
    """

    models: Path | None = SERVING(  # noqa: RUF009
        None, "Triton-style repository: DIR/<model>/<version>/model.onnx"
    )
    host: str = SERVING("0.0.0.0", "address to bind")
    grpc_port: int = SERVING(8001, "gRPC port; 0 picks one")
    metrics_port: int = SERVING(8002, "Prometheus port; 0 picks one, -1: no metrics endpoint")
    status_pages: bool = SERVING(True, "serve no status pages (/status) on the metrics port")
    status_refresh_seconds: float = SERVING(
        10.0, "status pages read the registry this often while viewed", at_least=1.0)  # fmt: skip
    # Processes serving one port (SO_REUSEPORT) under a supervisor; a worker is told how many
    # siblings it has, for its share of the CPUs and its metrics mode. Not auto by default:
    # on a shared host that would take every CPU.
    workers: int = SERVING(1, "gateway processes sharing the port, supervised and restarted;"
                           " auto: one per CPU this process may use (its affinity, capped by its"
                           " cgroup's CPU quota)", at_least=1, auto=available_cpus)  # fmt: skip
    # Measured: 8 lost 5-10% to 4 on one core (benchmarks/RESULTS.md).
    grpc_threads: int = SERVING(4, "request threads", at_least=1)
    # The lane answers ModelInfer from gRPC core's completion queue without grpcio's per-call
    # Python (gateway/api/infer_lane.py); off, grpcio's server answers it like every method.
    infer_lane: bool = SERVING(
        True, "answer ModelInfer through grpcio's server like every other method, not"
        " through the gateway's own completion-queue lane (slower; to compare, or if the lane"
        " fails)")  # fmt: skip
    # A ModelStreamInfer stream holds a thread while open (grpcio's synchronous server), so
    # streams get threads of their own; more are RESOURCE_EXHAUSTED.
    max_streams: int = SERVING(
        16, "ModelStreamInfer streams open at once, each on a thread of its own", at_least=0
    )
    feedback_max_calls: int = SERVING(4, "PutLabels calls storing labels at once, each on a"
                                      " thread of its own; more are RESOURCE_EXHAUSTED",
                                      at_least=1)  # fmt: skip
    # A client's longer or missing deadline is cut to this, so nothing waits forever behind a
    # stuck model.
    request_timeout_seconds: float = SERVING(
        60.0, "deadline for requests without one, and cap on longer ones", at_least=0.001
    )
    max_message_bytes: int = SERVING(256 * 1024 * 1024, "largest request/response")

    max_streams_per_connection: int = CONNECTIONS(
        128, "HTTP/2 streams one client connection may have open at once", at_least=1
    )
    # Calls waiting for their request message, for a thread, for a turn or running. Threads
    # beyond grpc_threads serve only open streams, PutLabels calls and stalled requests.
    max_calls: int = CONNECTIONS(
        1000, "calls in progress at once; more are RESOURCE_EXHAUSTED at once"
    )
    # Whatever the call's deadline: headers without a body cannot hold a thread.
    receive_timeout_seconds: float = CONNECTIONS(
        10.0, "a call's request message must arrive this soon after the server waits for it"
        " (a ModelInfer call: from its start; others: from their thread's), or it ends"
        " DEADLINE_EXCEEDED", at_least=0.001)  # fmt: skip
    max_connections: int = CONNECTIONS(
        1000, "client connections open at once; more are closed at once", at_least=1
    )
    # Its client reconnects on its next call.
    idle_connection_seconds: float = CONNECTIONS(
        300.0, "close connections without calls this long (GOAWAY)", at_least=0.001
    )
    handshake_timeout_seconds: float = CONNECTIONS(
        10.0, "a new connection's TLS and HTTP/2 handshakes must end this soon", at_least=0.001
    )
    # A vanished client's stream gives its thread back.
    keepalive_seconds: float = CONNECTIONS(
        60.0, "ping connections idle this long; close them unanswered after"
        " --keepalive-timeout-seconds", at_least=0.001)  # fmt: skip
    keepalive_timeout_seconds: float = CONNECTIONS(
        20.0, "close a pinged connection that has not answered this soon", at_least=0.001
    )
    # gRPC's default is 5 minutes, which cuts off any client with keepalive on.
    min_client_ping_seconds: float = CONNECTIONS(
        10.0, "clients pinging more often are disconnected (GOAWAY too_many_pings) at their"
        " third faster ping", at_least=0.0)  # fmt: skip

    tls_cert_file: Path | None = SECURITY(  # noqa: RUF009
        None, "PEM certificate chain: serve gRPC over TLS (with --tls-key)", flag="--tls-cert"
    )
    tls_key_file: Path | None = SECURITY(None, "PEM private key", flag="--tls-key")  # noqa: RUF009
    tls_client_ca_file: Path | None = SECURITY(  # noqa: RUF009
        None, "PEM CA bundle: require client certificates it signed (mutual TLS)",
        flag="--tls-client-ca")  # fmt: skip
    auth_tokens_file: Path | None = SECURITY(  # noqa: RUF009
        None, "bearer tokens, one 'NAME SCOPES TOKEN' per line (scopes: infer, admin,"
        " metrics, feedback); calls without a known token are refused")  # fmt: skip
    metrics_tls: bool = SECURITY(
        False, "serve /metrics over TLS with --tls-cert/--tls-key/--tls-client-ca"
    )
    metrics_auth: bool = SECURITY(False, "/metrics only for tokens with the 'metrics' scope")

    ort_intra_op_threads: int = MODELS(1, "onnxruntime threads per run")
    ort_inter_op_threads: int = MODELS(1, "onnxruntime inter-op threads")
    load_threads: int = MODELS(2, "versions loading at once, each on a thread of its own",
                               at_least=1)  # fmt: skip
    # A warm-up still running then is terminated and the version FAILED, a hung creation
    # abandoned.
    load_timeout_seconds: float = MODELS(
        120.0, "a version's fetch, memory probe, creation and warm-up get this long, then"
        " FAILED", at_least=0.001)  # fmt: skip
    # The version loads here only when that probe passes; checks.py says why not below 64 MiB.
    max_version_memory_bytes: int = MODELS(
        -1, "probe each version's load and warm-up first in a child process limited to this"
        " much memory above its start; -1: a quarter of the machine's (or the cgroup's)"
        " memory; 0: no probe", at_least=-1)  # fmt: skip
    max_model_bytes: int = MODELS(
        2**31 - 1, "larger model files are refused unread (FAILED)", at_least=1
    )

    max_batch_size: int = ADMISSION(1024, "largest batch a request may carry")
    max_inflight_per_version: int = ADMISSION(64, "admission limit per version", at_least=1)
    # Triton's instance count; the admission limit is then its sum with the queue.
    max_concurrency_per_version: int = ADMISSION(
        0, "requests of one version running at once, with up to --max-queue-per-version more"
        " waiting, each until its deadline; beyond that, UNAVAILABLE; 0: no limit of its own",
        at_least=0)  # fmt: skip
    max_queue_per_version: int = ADMISSION(64, "with --max-concurrency-per-version: requests"
                                           " that may wait beyond it", at_least=0)  # fmt: skip
    # Only versions with a dynamic batch dimension are batched.
    batch_delay_us: int = ADMISSION(
        -1, "dynamic batching: -1 off; else concurrent requests run together, waiting at most"
        " this many microseconds for more")  # fmt: skip

    shutdown_grace_seconds: float = SHUTDOWN(30.0, "drain time on SIGTERM")
    # Balancers and health-checking clients stop sending before intake closes.
    drain_notice_seconds: float = SHUTDOWN(
        1.0, "on SIGTERM, health says NOT_SERVING this long before new RPCs are refused,"
        " taken from the grace period (at most half of it)", at_least=0.0)  # fmt: skip

    redis_url: str | None = REGISTRY(None, "follow the registry in this Redis, Sentinel or Cluster")
    data_dir: Path | None = REGISTRY(  # noqa: RUF009
        None, "without --redis-url: run a private redis-server here",
        default_text="$XDG_DATA_HOME/onnxgate, else ~/.local/share/onnxgate")  # fmt: skip
    namespace: str = REGISTRY("onnxgate", "registry key namespace")
    replica_id: str = REGISTRY("", "name in heartbeats", default_text="<hostname>-<pid>")
    rules_poll_seconds: float = REGISTRY(2.0, "epoch poll interval, the backstop for lost hints")
    heartbeat_seconds: float = REGISTRY(5.0, "heartbeat interval")

    shadow_queue_size: int = SHADOWS(1000, "mirrored copies waiting; beyond it they are dropped")
    shadow_workers: int = SHADOWS(1, "threads running shadows")
    shadow_nice: int = SHADOWS(19, "shadow threads' nice value, 0-19 (19: idle CPU only; 0: the"
                                   " primaries' priority)")  # fmt: skip
    shadow_max_cpu_busy: float = SHADOWS(
        0.85, "drop shadow copies while the process uses more than this share of its CPUs;"
        " 1: never")  # fmt: skip
    # Counted, not compared.
    shadow_timeout_seconds: float = SHADOWS(
        5.0, "a shadow run still going this long is terminated", at_least=0.001
    )

    stats_flush_seconds: float = TELEMETRY(10.0, "per-version statistics write interval")
    stats_retention_seconds: int = TELEMETRY(86400, "1-minute statistics windows kept in Redis")
    drift_buffer_rows: int = TELEMETRY(65536, "input rows waiting to be sketched; 0: no drift")
    # Per gateway: each of --workers N sketches up to 1/N of it.
    drift_max_rows_per_second: float = TELEMETRY(
        500.0, "rows sketched per model-version and second; beyond it a uniform random sample"
        " of them; 0: every row", at_least=0.0)  # fmt: skip
    drift_flush_seconds: float = TELEMETRY(10.0, "sketch write interval")
    # gatectl's default too.
    drift_minute_ttl_seconds: int = TELEMETRY(3600, "1-minute sketch windows kept")
    drift_hour_ttl_seconds: int = TELEMETRY(8 * 86400, "hourly sketch windows kept")
    drift_monitor_seconds: float = TELEMETRY(60.0, "drift references and gauges refreshed so often")
    drift_monitor_window_seconds: float = TELEMETRY(900.0, "window of the drift gauges")

    # Predictions of models with a quality config (gatectl model create --task) are logged.
    prediction_buffer: int = QUALITY(65536, "answered requests waiting to be logged, and ids"
                                     " held while Redis is away; 0: no prediction log",
                                     at_least=0)  # fmt: skip
    prediction_ttl_seconds: int = QUALITY(
        7 * 86400, "how long a prediction waits for its label", flag="--prediction-ttl",
        at_least=3600)  # fmt: skip
    # Per gateway: each of --workers N logs up to 1/N of it (sizing it: docs/quality.md).
    prediction_log_max_per_second: float = QUALITY(
        100.0, "predictions logged per model and second; the rest are counted, not logged",
        at_least=0.0)  # fmt: skip
    # An id's shadows finish after its primary; its records are written together.
    prediction_hold_seconds: float = QUALITY(
        2.0, "a prediction is written this long after it was made, with its shadows'",
        at_least=0.0)  # fmt: skip
    prediction_flush_seconds: float = QUALITY(1.0, "prediction log write interval",
                                              at_least=0.01)  # fmt: skip
    # The joiner holding the lease joins every model's labels; the others stand by.
    label_join_seconds: float = QUALITY(1.0, "labels joined this often", at_least=0.01)
    quality_gauges_seconds: float = QUALITY(
        15.0, "quality and fairness gauges refreshed this often", at_least=0.1
    )
    quality_gauges_window_seconds: float = QUALITY(
        3600.0, "predictions made this far back are in the quality gauges", at_least=60.0
    )
    # Quality events (docs/quality.md#quality-events), judged by the rollout leader.
    quality_events_window_seconds: float = QUALITY(
        3600.0, "quality events judge windows this long", at_least=60.0)  # fmt: skip
    quality_events_windows: int = QUALITY(
        3, "bad windows in a row open an episode, good ones close it", at_least=1)  # fmt: skip
    quality_events_min_labels: float = QUALITY(
        100.0, "labelled rows a verdict needs (per segment value)", at_least=1.0)  # fmt: skip
    quality_events_label_wait_seconds: float = QUALITY(
        0.0, "accuracy and fairness judge windows this long after", at_least=0.0)  # fmt: skip
    accuracy_drop_threshold: float = QUALITY(
        0.05, "accuracy.drop: this far below the evaluation's metric", at_least=0.0)  # fmt: skip
    accuracy_floor: float | None = QUALITY(None, "accuracy.drop: the live metric below this")
    fairness_gap_threshold: float = QUALITY(
        0.1, "fairness.gap: a segment dimension's gap above this", at_least=0.0)  # fmt: skip
    quality_events_margin: float = QUALITY(
        0.01, "an episode ends with its figure this far inside", at_least=0.0)  # fmt: skip

    # The gateway holding the lease (a Redis key with this TTL, renewed every tick) drives them.
    rollout_controller: bool = ROLLOUTS(
        True, "take no part in driving rollouts (for a Redis user that may only read)")  # fmt: skip
    rollout_tick_seconds: float = ROLLOUTS(
        1.0, "rollout controller's tick and lease renewal", at_least=0.01)  # fmt: skip
    rollout_lease_seconds: float = ROLLOUTS(
        10.0, "leader lease TTL: another gateway takes over this long after the leader dies",
        at_least=0.1)  # fmt: skip
    rollout_webhook_url: str = ROLLOUTS("", "POST rollout events and quality events here")
    rollout_webhook_secret_file: Path | None = ROLLOUTS(  # noqa: RUF009
        None, "HMAC-SHA256 key of the webhook's X-Onnxgate-Signature (at least 16 bytes)"
    )
    # Events go one at a time, in order: while one is retried the others wait (100 at most;
    # more are dropped, counted). The defaults ride out about two minutes of a receiver down.
    rollout_webhook_attempts: int = ROLLOUTS(
        8, "tries per webhook event, the first included", at_least=1)  # fmt: skip
    rollout_webhook_backoff_seconds: float = ROLLOUTS(
        1.0, "wait before the first retry, doubled for each next", at_least=0.0)  # fmt: skip
    rollout_webhook_max_backoff_seconds: float = ROLLOUTS(
        60.0, "longest wait between tries, a receiver's Retry-After too", at_least=0.0)  # fmt: skip
    rollout_webhook_timeout_seconds: float = ROLLOUTS(
        5.0, "each try's answer must come this soon", at_least=0.001)  # fmt: skip

    log_level: str = LOGGING("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: str = LOGGING("json", "log line format", choices=("json", "text"))
    access_log_sample: float = LOGGING(
        0.0, "share of requests (0-1) logged on one access-log line each; 0: none",
        at_least=0.0, at_most=1.0)  # fmt: skip

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Defaults overridden by ONNXGATE_* variables; SettingsError names a bad one, or an
        ONNXGATE_* variable that is neither a setting nor in OTHER_VARIABLES."""
        return cls(**read_env(cls, env))  # type: ignore[arg-type]  # converted per field type

    def to_env(self) -> dict[str, str]:
        """The ONNXGATE_* variables from which from_env rebuilds these settings exactly."""
        return write_env(asdict(self))

    def with_overrides(self, **overrides: object) -> Settings:
        """A copy with the given fields replaced (None values are ignored)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **changes)  # type: ignore[arg-type]  # argparse types match fields

    def resolved_replica_id(self) -> str:
        """The name this process heartbeats under: replica_id, else <hostname>-<pid> made
        fit for a registry key."""
        if self.replica_id:
            return self.replica_id
        return _REPLICA_ID_UNSAFE.sub("-", f"{socket.gethostname()}-{os.getpid()}")[:128]

    def drain_notice(self, grace_seconds: float | None = None) -> float:
        """The NOT_SERVING notice a drain of `grace_seconds` (default shutdown_grace_seconds)
        gives: drain_notice_seconds, at most half the grace."""
        grace = self.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        return min(self.drain_notice_seconds, grace / 2)
