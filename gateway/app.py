"""Composition root: builds every part of one gateway process, starts them and drains them.

Server model: a thread-pool `grpc.server` (1.8x the requests of `grpc.aio`), whose ModelInfer
calls the InferLane answers from gRPC core's completion queue without grpcio's per-call
Python (api/infer_lane.py; both measured in benchmarks/RESULTS.md); onnxruntime's run()
releases the GIL, so request threads overlap model work. Every request is served from memory;
loading runs on the VersionStore's threads.

Start: the private Redis and the replica id claim, the gRPC server and /metrics, the background
work, and last what fills the route table (the rule watcher, or --models loaded directly).

Stop is not the reverse of start: intake goes first and the requests in flight are drained,
then what they leave behind (shadow runs, runs past their deadline, loads), then the
background tasks, each after what feeds it (statistics after the shadows, the webhook after
the rollout controller's last notifications, both before the registry client closes), and
/metrics last so a scrape sees the drain to its end.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import CollectorRegistry

from gateway.api.call_threads import receive_deadlines_apply
from gateway.api.connections import ensure_fd_limit, open_connections
from gateway.api.health import HealthService, ServingState
from gateway.api.metadata import server_version
from gateway.api.server import INFERENCE_SERVICE, bind, build_server, call_threads
from gateway.api.servicer import InferenceServicer
from gateway.api.status import code_name
from gateway.drift.recorder import DriftRecorder
from gateway.drift.sampling import RowSampler
from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.metrics.http import MetricsServer
from gateway.models.run_deadlines import RunDeadlines
from gateway.models.store import VersionStore
from gateway.pipeline.cpu_turns import RequestTurns
from gateway.pipeline.inference import InferencePipeline
from gateway.process.bootstrap import freeze_startup_objects, start_process, watch_supervisor
from gateway.process.metrics_endpoint import start_metrics_endpoint
from gateway.process.private_redis import PrivateRedis, PrivateRedisError
from gateway.process.shutdown import (
    CLEANUP_SECONDS,
    WATCHDOG_MARGIN_SECONDS,
    ShutdownBudget,
    start_watchdog,
)
from gateway.quality.tasks import QualityTasks
from gateway.routing.default_routes import routes_for_ready_versions
from gateway.routing.following import RegistryFollowing
from gateway.routing.replica_identity import ReplicaIdInUse
from gateway.routing.table import RouteTableHolder
from gateway.security.material import Security, SecurityError
from gateway.settings import Settings
from gateway.shadow.dispatcher import ShadowDispatcher
from gateway.telemetry.background import TelemetryTasks
from gateway.telemetry.request_stats import RequestStats
from registry_client.repository import scan_repository

__all__ = ["Gateway", "serve"]

_log = logging.getLogger(__name__)


class Gateway:
    """One gateway process: gRPC server, metrics endpoint, versions and routes."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        """SecurityError for TLS or token settings that cannot work."""
        self.settings = settings
        self.security = Security.from_settings(settings)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.replica = settings.resolved_replica_id()
        self.private_redis: PrivateRedis | None = None
        redis_url = settings.redis_url
        if redis_url is None and settings.data_dir is not None:
            self.private_redis = PrivateRedis(settings.data_dir)
            redis_url = self.private_redis.url
        self.redis_url = redis_url
        # Statistics windows and sketches are kept only with a registry to write them to.
        self.request_stats = None
        if redis_url:
            self.request_stats = RequestStats(on_given_up=lambda: self._given_up("statistics"))
        # One of several worker processes: metrics go to the supervisor's multiprocess files.
        self.metrics = GatewayMetrics(self.registry, self.request_stats, settings.workers > 1)
        # Runs (and warm-ups) still going at their deadline are stopped from this thread.
        self.run_deadlines = RunDeadlines()
        self.versions = VersionStore(settings, self.metrics, self.run_deadlines)
        self.metrics.watch_inflight(self.versions.inflight_by_model)
        self.routes = RouteTableHolder()
        self.shadows = ShadowDispatcher(
            self.metrics, code_name, settings.shadow_queue_size, settings.shadow_workers,
            settings.shadow_nice, settings.shadow_max_cpu_busy, 1 / settings.workers,
            settings.shadow_timeout_seconds,
        )  # fmt: skip
        self.drift: DriftRecorder | None = None
        if redis_url and settings.drift_buffer_rows > 0:
            cap = settings.drift_max_rows_per_second / settings.workers
            self.drift = DriftRecorder(
                self.metrics.sketch_dropped, settings.drift_buffer_rows,
                on_given_up=lambda: self._given_up("sketches"),
                sampler=RowSampler(cap) if cap > 0 else None,
            )  # fmt: skip
        self.loaded = threading.Event()
        self.health = HealthService([INFERENCE_SERVICE], alive=self.is_alive)
        self.state = ServingState(self.health)

        # The registry: its rules, and the quality work (the prediction log, labels joined).
        self.following: RegistryFollowing | None = None
        if redis_url:
            self.following = RegistryFollowing(
                settings, redis_url, self.replica, self.versions, self.routes, self.metrics,
                on_change=self._on_routes_changed,
            )  # fmt: skip
        self.registry_client = self.following.client if self.following else None
        self.watcher = self.following.watcher if self.following else None
        self.quality = QualityTasks(settings, self.metrics, self.registry_client, self.replica,
                                    lambda: self.versions.ready_versions().keys())  # fmt: skip

        # The request path: pipeline, then the servicer over it.
        self.call_threads = call_threads(settings, self.metrics.receive_timeouts.inc)
        self.pipeline = InferencePipeline(
            self.routes, self.versions, self.metrics, code_name, self.shadows, self.drift,
            self.loaded.is_set, RequestTurns(settings.grpc_threads), self.quality.recorder,
            self.call_threads.holding,
        )  # fmt: skip
        self.servicer = InferenceServicer(
            self.pipeline, self.versions, self.state, server_version(), settings.max_batch_size,
            settings.max_streams, settings.request_timeout_seconds, settings.access_log_sample,
            self.call_threads.holding,
        )  # fmt: skip
        built = build_server(settings, self.security, self.servicer, self.health,
                             self.call_threads, self.registry_client,
                             self.metrics.receive_timeouts.inc)  # fmt: skip
        self._server, self._lane = built.server, built.lane
        self.metrics.watch_transport(
            lambda: self.call_threads.threads, lambda: open_connections(self.grpc_port)
        )
        self.grpc_port = 0
        self.metrics_port = 0
        self._metrics_server: MetricsServer | None = None

        self.telemetry = TelemetryTasks(
            settings, self.metrics, self.versions, self.replica, self.registry_client,
            self.request_stats, self.drift,
        )  # fmt: skip
        # Flushed, refreshed or stopped on demand by tests and tools.
        self.stats_flusher = self.telemetry.stats_flusher
        self.sketch_flusher = self.telemetry.sketch_flusher
        self.drift_monitor = self.telemetry.drift_monitor
        self.drift_tasks = self.telemetry.drift_tasks
        if self.following is not None and settings.rollout_controller:
            self.following.drive_rollouts(self.registry, self.security.webhook_secret)
        self.rollouts = self.following.rollouts if self.following else None

    def _given_up(self, what: str) -> None:
        self.metrics.windows_given_up.labels(what).inc()

    def start(self) -> None:
        """Bind and start serving; versions load in the background (ready when loaded)."""
        settings = self.settings
        if self.private_redis is not None:
            self.private_redis.start()
        if self.following is not None:
            try:
                self.following.claim_replica_id()
            except ReplicaIdInUse:
                if self.private_redis is not None:
                    self.private_redis.stop()
                raise
        self.run_deadlines.start()
        self.shadows.start()
        following = self.following is not None
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
        if self._lane is not None:
            self._lane.start()
        self._metrics_server = start_metrics_endpoint(settings, self.security, self.registry,
                                                      self.redis_url)  # fmt: skip
        if self._metrics_server is not None:
            self.metrics_port = self._metrics_server.server_port
        _log.info(
            "gateway started",
            extra={
                "grpc_port": self.grpc_port,
                "metrics_port": self.metrics_port,
                "versions": len(sources),
            },
        )
        self.telemetry.start()
        self.quality.start()
        if self.following is not None:
            self.following.start()
        else:
            self.versions.load_all(sources, on_done=self._on_loaded)

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
        # docs/reliability.md: what a client sees during a drain).
        notice = self.settings.drain_notice(grace)
        if notice > 0:
            time.sleep(notice)
        stopped = self._server.stop(max(deadline - time.monotonic(), 0.0))
        self.health.close_watches()  # watchers have seen NOT_SERVING; they must not hold the drain
        stopped.wait()
        if self._lane is not None:  # its thread outlives a call still running, not the drain
            self._lane.stop(max(deadline - time.monotonic(), 0.0))
        self.call_threads.shutdown(wait=False)
        # Shadows copied from the drained requests finish within what is left of the grace.
        self.shadows.stop(max(deadline - time.monotonic(), 0.0))
        # gRPC has answered every call by now; runs still going would only hold threads.
        self.run_deadlines.terminate_all()
        self.versions.close()  # loads are cancelled: probes killed, warm-ups terminated
        # The rest has what the drain left of the grace, plus CLEANUP_SECONDS.
        budget = ShutdownBudget(deadline - time.monotonic() + CLEANUP_SECONDS)
        self.telemetry.stop(budget)
        self.quality.stop(budget)
        if self.following is not None:  # the rollout lease is handed over before Redis goes
            self.following.stop(budget)
        self.run_deadlines.stop(budget.left())
        if self.following is not None:
            self.following.close()
        if self.private_redis is not None:
            budget.run("private-redis", self.private_redis.stop)
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
    orphan_watch = None if parent_pid is None else watch_supervisor(parent_pid, stop_requested)
    try:
        gateway.start()
    except (PrivateRedisError, ReplicaIdInUse) as exc:
        _log.error("cannot start", extra={"reason": str(exc)})
        return 2
    freeze_startup_objects()
    # In slices: a signal the kernel gives another thread only marks Python's handler pending,
    # which a main thread blocked in an untimed wait never runs (a SIGTERM was lost so).
    while not stop_requested.wait(0.5):
        pass
    # Whatever still runs, SIGTERM ends the process within notice + grace + 2 s.
    grace = settings.shutdown_grace_seconds
    start_watchdog(settings.drain_notice() + grace + WATCHDOG_MARGIN_SECONDS)
    gateway.stop()
    if orphan_watch is not None:
        orphan_watch.stop()
    return 0
