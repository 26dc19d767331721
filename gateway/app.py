"""Composition root: builds every object, starts them in order and stops them in reverse.

Server model: a thread-pool `grpc.server`. Measured on this project's 2-core machine it
answers about 1.8x the requests of `grpc.aio` on the same path (benchmarks/RESULTS.md);
onnxruntime's run() releases the GIL, so request threads overlap model work. Every request
is served from memory; loading runs on the VersionStore's executor.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.api.call_threads import receive_deadlines_apply
from gateway.api.connections import ensure_fd_limit, open_connections
from gateway.api.health import HealthService, ServingState
from gateway.api.server import INFERENCE_SERVICE, bind, build_server, call_threads
from gateway.api.servicer import InferenceServicer
from gateway.api.status import code_name
from gateway.drift.monitor import DriftMonitor
from gateway.drift.recorder import DriftRecorder
from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.metrics.http import MetricsServer, start_metrics_server
from gateway.metrics.rollout import RolloutMetrics
from gateway.models.loader import LoadOptions
from gateway.models.memory_probe import default_memory_budget
from gateway.models.run_deadlines import RunDeadlines
from gateway.models.store import VersionStore
from gateway.pipeline.cpu_turns import RequestTurns
from gateway.pipeline.inference import InferencePipeline
from gateway.process.bootstrap import start_process
from gateway.process.private_redis import PrivateRedis, PrivateRedisError
from gateway.process.shutdown import (
    CLEANUP_SECONDS,
    WATCHDOG_MARGIN_SECONDS,
    ShutdownBudget,
    start_watchdog,
)
from gateway.rollout.controller import RolloutController
from gateway.rollout.webhook import WebhookNotifier
from gateway.routing.replica_identity import ReplicaIdInUse, claim_replica_id
from gateway.routing.repository import routes_for_ready_versions
from gateway.routing.table import RouteTableHolder
from gateway.routing.watcher import RuleWatcher
from gateway.security.material import Security, SecurityError
from gateway.settings import Settings
from gateway.shadow.dispatcher import ShadowDispatcher
from gateway.telemetry.flusher import WindowFlusher
from gateway.telemetry.periodic import Periodic
from gateway.telemetry.request_stats import RequestStats
from registry_client.client import RegistryClient
from registry_client.drift.store import SketchWrite
from registry_client.repository import scan_repository
from registry_client.stats.store import WindowWrite

__all__ = ["Gateway", "serve"]

_log = logging.getLogger(__name__)


def _replica_id(settings: Settings) -> str:
    if settings.replica_id:
        return settings.replica_id
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{socket.gethostname()}-{os.getpid()}")[:128]


def _server_version() -> str:
    try:
        return version("onnxgate")
    except PackageNotFoundError:
        return "0+unknown"


class Gateway:
    """One gateway process: gRPC server, metrics endpoint, versions and routes."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        """SecurityError for TLS or token settings that cannot work."""
        self.settings = settings
        self.security = Security.from_settings(settings)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.private_redis: PrivateRedis | None = None
        redis_url = settings.redis_url
        if redis_url is None and settings.data_dir is not None:
            self.private_redis = PrivateRedis(settings.data_dir)
            redis_url = self.private_redis.url
        # Statistics windows are kept only when there is a registry to write them to.
        self.request_stats = None
        if redis_url:
            self.request_stats = RequestStats(on_given_up=lambda: self._given_up("statistics"))
        # One of several worker processes: metrics go to the supervisor's multiprocess files.
        self.metrics = GatewayMetrics(self.registry, self.request_stats, settings.workers > 1)
        options = LoadOptions(
            intra_op_threads=settings.ort_intra_op_threads,
            inter_op_threads=settings.ort_inter_op_threads,
            max_batch_size=settings.max_batch_size,
            max_inflight_per_version=settings.max_inflight_per_version,
            max_concurrency_per_version=settings.max_concurrency_per_version,
            max_queue_per_version=settings.max_queue_per_version,
            batch_delay_us=settings.batch_delay_us,
            max_model_bytes=settings.max_model_bytes,
            max_version_memory_bytes=default_memory_budget()
            if settings.max_version_memory_bytes < 0
            else settings.max_version_memory_bytes,
        )
        # Runs (and warm-ups) still going at their deadline are stopped from this thread.
        self.run_deadlines = RunDeadlines()
        self.versions = VersionStore(options, self.metrics, settings.load_threads,
                                     settings.load_timeout_seconds, self.run_deadlines)  # fmt: skip
        self.metrics.watch_inflight(self.versions.inflight_by_model)
        self.routes = RouteTableHolder()
        self.shadows = ShadowDispatcher(
            self.metrics, code_name, settings.shadow_queue_size, settings.shadow_workers,
            settings.shadow_nice, settings.shadow_max_cpu_busy, 1 / settings.workers,
            settings.shadow_timeout_seconds,
        )  # fmt: skip
        # Sketches, like statistics, are kept only when there is a registry to write them to.
        self.drift: DriftRecorder | None = None
        if redis_url and settings.drift_buffer_rows > 0:
            self.drift = DriftRecorder(
                self.metrics.sketch_dropped, settings.drift_buffer_rows,
                on_given_up=lambda: self._given_up("sketches"),
            )  # fmt: skip
        self.loaded = threading.Event()
        self.pipeline = InferencePipeline(
            self.routes, self.versions, self.metrics, code_name, self.shadows, self.drift,
            self.loaded.is_set, RequestTurns(settings.grpc_threads),
        )  # fmt: skip
        self.health = HealthService([INFERENCE_SERVICE], alive=self.is_alive)
        self.state = ServingState(self.health)
        self.grpc_port = 0
        self.metrics_port = 0
        self._metrics_server: MetricsServer | None = None
        self.replica = _replica_id(settings)
        self.registry_client: RegistryClient | None = None
        self.watcher: RuleWatcher | None = None
        self.stats_flusher: WindowFlusher[WindowWrite] | None = None
        self.drift_tasks: list[Periodic | WindowFlusher[SketchWrite]] = []
        self.drift_monitor: DriftMonitor | None = None
        self.sketch_flusher: WindowFlusher[SketchWrite] | None = None
        self._temporary_cache: tempfile.TemporaryDirectory[str] | None = None
        self.rollouts: RolloutController | None = None
        self.webhook: WebhookNotifier | None = None
        if redis_url:
            self.registry_client = RegistryClient.from_url(redis_url, settings.namespace)
            self.watcher = RuleWatcher(
                self.registry_client, self.versions, self.routes, self.metrics,
                replica=self.replica, poll_seconds=settings.rules_poll_seconds,
                heartbeat_seconds=settings.heartbeat_seconds, on_change=self._on_routes_changed,
                artifact_cache=self._artifact_cache(),
                bootstrap=self._import_models if settings.models else None,
                max_artifact_bytes=settings.max_model_bytes,
            )  # fmt: skip
            conflict, heartbeat = self.metrics.replica_id_conflict, self.watcher.heartbeat
            self.metrics.samplers.append(lambda: conflict.set(int(heartbeat.conflicting())))
            assert self.request_stats is not None
            stats_store, replica = self.registry_client.stats, self.replica

            def write_stats(writes: list[WindowWrite]) -> None:
                stats_store.write(replica, writes, settings.stats_retention_seconds)

            self.stats_flusher = WindowFlusher(
                "statistics", self.request_stats, write_stats, settings.stats_flush_seconds,
                self.metrics.flush_failures,
            )  # fmt: skip
            if self.drift is not None:
                self._drift_tasks(self.registry_client, self.drift)
            if settings.rollout_controller:
                self._rollout_controller(self.registry_client)
        self.servicer = InferenceServicer(
            self.pipeline, self.versions, self.state, _server_version(), settings.max_batch_size,
            settings.max_streams, settings.request_timeout_seconds, settings.access_log_sample,
        )  # fmt: skip
        self.call_threads = call_threads(settings, self.metrics.receive_timeouts.inc)
        self._server = build_server(
            settings, self.security, self.servicer, self.health, self.call_threads
        )
        self.metrics.watch_transport(
            lambda: self.call_threads.threads, lambda: open_connections(self.grpc_port)
        )
        samplers = self.metrics.samplers

        def sample_metrics() -> None:
            for sample in samplers:
                sample()

        self._metric_sampler = Periodic("metric-samplers", 0.5, sample_metrics)

    def _rollout_controller(self, client: RegistryClient) -> None:
        settings = self.settings
        metrics = RolloutMetrics(self.registry)
        secret = self.security.webhook_secret
        if settings.rollout_webhook_url and secret is not None:
            outcomes = metrics.webhooks
            self.webhook = WebhookNotifier(
                settings.rollout_webhook_url, secret,
                on_result=lambda event, outcome: outcomes.labels(event, outcome).inc(),
            )  # fmt: skip
        assert self.watcher is not None
        self.rollouts = RolloutController(
            client, self.replica, metrics, tick_seconds=settings.rollout_tick_seconds,
            lease_seconds=settings.rollout_lease_seconds,
            notify=None if self.webhook is None else self.webhook.notify,
            instance=self.watcher.heartbeat.instance,
        )  # fmt: skip

    def _given_up(self, what: str) -> None:
        self.metrics.windows_given_up.labels(what).inc()

    def _drift_tasks(self, client: RegistryClient, recorder: DriftRecorder) -> None:
        """Fold every second, write every drift_flush_seconds, refresh references and gauges
        every drift_monitor_seconds: all off the request path."""
        settings, replica = self.settings, self.replica

        def write_sketches(writes: list[SketchWrite]) -> None:
            client.drift.write(replica, writes, settings.drift_minute_ttl_seconds,
                               settings.drift_hour_ttl_seconds)  # fmt: skip

        self.drift_monitor = DriftMonitor(
            client, recorder, self.versions, self.metrics,
            settings.drift_monitor_window_seconds, settings.drift_minute_ttl_seconds,
        )  # fmt: skip
        self.sketch_flusher = WindowFlusher(
            "sketches", recorder, write_sketches, settings.drift_flush_seconds,
            self.metrics.flush_failures,
        )  # fmt: skip
        self.drift_tasks = [
            Periodic("drift-fold", 1.0, self.drift_monitor.fold),
            self.sketch_flusher,
            Periodic("drift-monitor", settings.drift_monitor_seconds, self.drift_monitor.refresh),
        ]

    def start(self) -> None:
        """Bind and start serving; versions load in the background (ready when loaded)."""
        settings = self.settings
        if self.private_redis is not None:
            self.private_redis.start()
        if self.watcher is not None:
            self._claim_replica_id()
        self.run_deadlines.start()
        self.shadows.start()
        following = self.watcher is not None
        sources = scan_repository(settings.models) if settings.models and not following else []
        fd_warning = ensure_fd_limit(settings.max_connections)
        if fd_warning is not None:
            _log.warning(fd_warning)
        if not receive_deadlines_apply():
            _log.warning("this grpcio's server internals are not the ones the receive timeout"
                         " hooks into: calls that never send their request hold a thread until"
                         " the client leaves")  # fmt: skip
        self.grpc_port = bind(self._server, settings, self.security)
        self._server.start()
        tls = self.security.tls
        if settings.metrics_port >= 0:
            self._metrics_server = start_metrics_server(
                settings.metrics_port, settings.host, self.registry,
                tls.ssl_context() if tls is not None and settings.metrics_tls else None,
                self.security.tokens if settings.metrics_auth else None,
            )  # fmt: skip
            self.metrics_port = self._metrics_server.server_port
        _log.info(
            "gateway started",
            extra={
                "grpc_port": self.grpc_port,
                "metrics_port": self.metrics_port,
                "versions": len(sources),
            },
        )
        if self.metrics.samplers:
            self._metric_sampler.start()
        if self.stats_flusher is not None:
            self.stats_flusher.start()
        for task in self.drift_tasks:
            task.start()
        if self.webhook is not None:
            self.webhook.start()
        if self.rollouts is not None:
            self.rollouts.start()
        if self.watcher is not None:
            self.watcher.start()
        else:
            self.versions.load_all(sources, on_done=self._on_loaded)

    def _claim_replica_id(self) -> None:
        """Refuse to start (ReplicaIdInUse) under an id another live gateway heartbeats with,
        before anything is served or written under it."""
        assert self.registry_client is not None and self.watcher is not None
        try:
            claim_replica_id(self.registry_client, self.watcher.heartbeat)
        except ReplicaIdInUse:
            self.registry_client.close()
            if self.private_redis is not None:
                self.private_redis.stop()
            if self._temporary_cache is not None:
                self._temporary_cache.cleanup()
            raise

    def _artifact_cache(self) -> Path:
        """Where uploaded artifacts are kept: the data directory, else a private temporary
        one removed at stop."""
        if self.settings.data_dir is not None:
            cache = self.settings.data_dir / "artifacts"
            cache.mkdir(parents=True, exist_ok=True, mode=0o700)
            return cache
        self._temporary_cache = tempfile.TemporaryDirectory(prefix="onnxgate-artifacts-")
        return Path(self._temporary_cache.name)

    def _import_models(self) -> None:
        """Register --models DIR in the registry and give its models default rules."""
        assert self.registry_client is not None and self.settings.models is not None
        self.registry_client.import_repository(self.settings.models, actor=self.replica)
        self.registry_client.ensure_default_rules(actor=self.replica)

    def _on_routes_changed(self) -> None:
        """Readiness follows the rules (watcher.is_serving_every_rule); `loaded` is set once
        no model waits for its first load."""
        assert self.watcher is not None
        self.state.mark_ready(self.watcher.is_serving_every_rule())
        if self.watcher.is_settled():
            self.loaded.set()

    def is_alive(self) -> bool:
        """Liveness: the loops this process cannot serve correctly without still run (a
        load, Redis or a drain in progress does not make a gateway dead)."""
        if not self.run_deadlines.is_alive():
            return False
        return self.watcher is None or self.watcher.is_alive()

    def _on_loaded(self) -> None:
        ready = self.versions.ready_versions()
        self.routes.replace(routes_for_ready_versions(ready))
        known = {s.model for s in self.versions.statuses()}
        self.state.mark_ready(known <= set(ready))
        self.loaded.set()

    def stop(self, grace_seconds: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new RPCs, let in-flight ones finish for the grace period,
        then stop the rest by the grace's end + CLEANUP_SECONDS (shutdown.py), whatever is
        still running then."""
        grace = self.settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        deadline = time.monotonic() + grace
        self.state.mark_draining()
        # Health watchers and balancers learn NOT_SERVING while intake is still open, so the
        # calls they sent before they knew are served. server.stop then drops the calls still
        # queued in gRPC core and answers them CANCELLED; their handler never ran (grpc#41785,
        # RELIABILITY.md: what a client sees during a drain).
        notice = min(self.settings.drain_notice_seconds, grace / 2)
        if notice > 0:
            time.sleep(notice)
        stopped = self._server.stop(max(deadline - time.monotonic(), 0.0))
        self.health.close_watches()  # watchers have seen NOT_SERVING; they must not hold the drain
        stopped.wait()
        self.call_threads.shutdown(wait=False)
        # Shadows copied from the drained requests finish within what is left of the grace.
        self.shadows.stop(max(deadline - time.monotonic(), 0.0))
        # gRPC has answered every call by now; runs still going would only hold threads.
        self.run_deadlines.terminate_all()
        self.versions.close()  # loads are cancelled: probes killed, warm-ups terminated
        # The rest has what the drain left of the grace, plus CLEANUP_SECONDS.
        budget = ShutdownBudget(deadline - time.monotonic() + CLEANUP_SECONDS)
        budget.run("metric-sampler", self._metric_sampler.stop)
        if self.stats_flusher is not None:  # after the shadows, so their last runs count
            budget.run("statistics", self.stats_flusher.stop)
        for task in self.drift_tasks:  # the sketch flusher folds and writes what is left
            budget.run("drift", task.stop)
        if self.rollouts is not None:  # hands the lease over before Redis may go
            budget.run("rollouts", self.rollouts.stop)
        webhook, watcher = self.webhook, self.watcher
        if webhook is not None:  # after the controller: its last notifications go out
            budget.run("webhook", lambda: webhook.stop(budget.left()))
        if watcher is not None:
            budget.run("rules", lambda: watcher.stop(budget.left()))
        self.run_deadlines.stop(budget.left())
        if self.registry_client is not None:
            self.registry_client.close()
        if self.private_redis is not None:
            budget.run("private-redis", self.private_redis.stop)
        if self._temporary_cache is not None:
            self._temporary_cache.cleanup()
        if self._metrics_server is not None:
            budget.run("metrics-server", self._metrics_server.shutdown)
            self._metrics_server.server_close()
        _log.info("gateway stopped")


def serve(settings: Settings, parent_pid: int | None = None) -> int:
    """Run a gateway until SIGTERM or SIGINT, then drain gracefully; returns the exit code.

    A worker passes its supervisor's pid: it drains when orphaned, so a supervisor killed
    without a chance to forward SIGTERM leaves no workers behind."""
    stop_requested = start_process(settings, "draining")
    try:
        gateway = Gateway(settings)
    except SecurityError as exc:
        _log.error("cannot start", extra={"reason": str(exc)})
        return 2
    orphan_watch: Periodic | None = None
    if parent_pid is not None:

        def stop_when_orphaned() -> None:
            if os.getppid() != parent_pid:
                _log.warning("supervisor gone; draining")
                stop_requested.set()

        orphan_watch = Periodic("orphan-watch", 1.0, stop_when_orphaned)
        orphan_watch.start()
    try:
        gateway.start()
    except (PrivateRedisError, ReplicaIdInUse) as exc:
        _log.error("cannot start", extra={"reason": str(exc)})
        return 2
    stop_requested.wait()
    # Whatever still runs, SIGTERM ends the process within notice + grace + 2 s.
    notice = min(settings.drain_notice_seconds, settings.shutdown_grace_seconds / 2)
    start_watchdog(notice + settings.shutdown_grace_seconds + WATCHDOG_MARGIN_SECONDS)
    gateway.stop()
    if orphan_watch is not None:
        orphan_watch.stop()
    return 0
