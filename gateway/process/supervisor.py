"""`onnxgate serve --workers N`: N full gateway processes on one port, kept running.

The GIL caps one Python process at about one core of request work, so more cores need more
processes. Each worker is a whole gateway (own threads, Redis connections, sketches, replica
id) started as a fresh interpreter (`python -m gateway.process.worker`, never a fork: grpcio
does not survive fork) with its settings in ONNXGATE_* variables. They share the port through
SO_REUSEPORT: the kernel spreads new connections over the workers' listeners, so a gRPC
client reaches several workers only over several connections.

The supervisor owns what must exist once: the port (held by a bound, never-listening socket,
so no other program takes it while a worker restarts), the private redis-server, the import
of --models into the registry, and /metrics, which sums every worker's multiprocess files. It
restarts a worker that exits unasked (backing off when one keeps crashing) and forwards
SIGTERM so every worker drains.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import redis
from prometheus_client.multiprocess import mark_process_dead

from gateway.metrics.http import MetricsServer
from gateway.metrics.supervisor import SupervisorMetrics
from gateway.process.bootstrap import start_process
from gateway.process.metrics_endpoint import start_metrics_endpoint
from gateway.process.private_redis import PrivateRedis, PrivateRedisError
from gateway.process.shutdown import WATCHDOG_MARGIN_SECONDS, ShutdownBudget, start_watchdog
from gateway.security.material import Security
from gateway.settings import ENV_PREFIX, Settings
from registry_client.client import RegistryClient
from registry_client.errors import RegistryError, Rejected

__all__ = ["EXIT_CANNOT_START", "Supervisor", "SupervisorError", "supervise"]

EXIT_CANNOT_START = 2  # a worker's exit code for errors a restart would only repeat
POLL_SECONDS = 0.1
STABLE_SECONDS = 30.0  # a worker up this long is no longer crash-looping
MAX_BACKOFF_SECONDS = 10.0
# A worker ends within notice + grace + WATCHDOG_MARGIN_SECONDS of SIGTERM (shutdown.py); one
# still there this much later is killed, and the supervisor's own steps share what is left
# of its 2 s.
KILL_MARGIN_SECONDS = 0.1
SUPERVISOR_MARGIN_SECONDS = 1.95
_log = logging.getLogger(__name__)


class SupervisorError(RuntimeError):
    """Raised when the supervisor cannot start; the message says what to change."""


@dataclass
class _Slot:
    """One worker position; its process is replaced when it dies."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    crashes_in_a_row: int = 0
    restart_at: float = 0.0


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (never listen) a SO_REUSEPORT socket on host:port so the workers can share it and
    nobody else can take it; port 0 picks a free one. Refuses a port something listens on."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    if port != 0:
        # Without SO_REUSEPORT this bind fails while anyone listens on the port, even
        # another onnxgate whose workers would otherwise silently share it with ours.
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise SupervisorError(f"--grpc-port {port}: {exc.strerror}") from exc
    reserved = socket.socket(family, kind, proto)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        reserved.bind(address)
    except OSError as exc:
        reserved.close()
        raise SupervisorError(f"--grpc-port {port}: {exc.strerror}") from exc
    return reserved


def _metrics_directory() -> Path:
    """Shared memory when there is some: workers write their metric files on every request."""
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="onnxgate-metrics-", dir=parent))


def _import_models(url: str, settings: Settings, actor: str, stop: threading.Event) -> None:
    """Register --models once for all workers, waiting for Redis like a gateway would."""
    assert settings.models is not None
    client = RegistryClient.from_url(url, settings.namespace)
    try:
        while not stop.is_set():
            try:
                client.import_repository(settings.models, actor=actor)
                client.ensure_default_rules(actor=actor)
                return
            except Rejected as exc:  # a bad directory is reported, the rest serves
                _log.error("model directory not imported", extra={"reason": str(exc)})
                return
            except (RegistryError, redis.RedisError) as exc:
                _log.warning("registry unreachable; retrying", extra={"reason": str(exc)})
                stop.wait(1.0)
    finally:
        client.close()


class Supervisor:
    """Starts the shared resources and N workers, restarts the ones that die, drains all."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.settings = settings
        self._stop = stop
        self._slots = [_Slot(i) for i in range(settings.workers)]
        self._private_redis: PrivateRedis | None = None
        self._port_holder: socket.socket | None = None
        self._metrics_dir = _metrics_directory()
        self.metrics = SupervisorMetrics(self._metrics_dir, self._worker_pids)
        self._metrics_server: MetricsServer | None = None
        self._worker_settings = settings
        self.grpc_port = 0
        self.metrics_port = 0
        self._replica = settings.resolved_replica_id()
        self._exit_code = 0

    def start(self) -> None:
        """Shared resources first, then every worker."""
        settings = self.settings
        self._port_holder = reserve_port(settings.host, settings.grpc_port)
        self.grpc_port = self._port_holder.getsockname()[1]
        redis_url = settings.redis_url
        if redis_url is None and settings.data_dir is not None:
            self._private_redis = PrivateRedis(settings.data_dir)
            self._private_redis.start()
            redis_url = self._private_redis.url
        following = redis_url is not None
        if following and settings.models is not None:
            assert redis_url is not None
            _import_models(redis_url, settings, self._replica, self._stop)
        self._worker_settings = replace(
            settings, grpc_port=self.grpc_port, metrics_port=-1, redis_url=redis_url,
            models=None if following else settings.models,  # imported above
        )  # fmt: skip
        if settings.metrics_port >= 0:
            security = Security.from_settings(settings)  # the CLI has checked it already
            self._metrics_server = start_metrics_endpoint(
                settings, security, self.metrics.registry, redis_url
            )
        if self._metrics_server is not None:
            self.metrics_port = self._metrics_server.server_port
        _log.info(
            "gateway started",
            extra={"grpc_port": self.grpc_port, "metrics_port": self.metrics_port,
                   "workers": settings.workers},
        )  # fmt: skip
        for slot in self._slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        suffix = f"-w{slot.index}" + (f".{slot.restarts}" if slot.restarts else "")
        worker = replace(self._worker_settings, replica_id=self._replica + suffix)
        # Only our variables: an inherited ONNXGATE_* must not fill a field we left unset.
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(worker.to_env())
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self._metrics_dir)
        command = [sys.executable, "-m", "gateway.process.worker", str(os.getpid())]
        slot.process = subprocess.Popen(command, env=env)
        slot.started = time.monotonic()
        _log.info("worker started", extra={"worker": slot.index, "pid": slot.process.pid,
                                           "replica": worker.replica_id})  # fmt: skip
        self.metrics.workers_alive.set(self._alive())

    def _worker_pids(self) -> dict[str, int]:
        """index -> pid of each worker not yet reaped. Read by /metrics on its own threads, so
        it does not poll(): reaping is the run loop's; a pid that just exited yields nothing."""
        return {str(s.index): p.pid for s in list(self._slots)
                if (p := s.process) is not None and p.returncode is None}  # fmt: skip

    def _alive(self) -> int:
        return sum(1 for s in self._slots if s.process is not None and s.process.poll() is None)

    def run(self) -> None:
        """Watch the workers until asked to stop (or a worker cannot start at all)."""
        while not self._stop.wait(POLL_SECONDS):
            now = time.monotonic()
            for slot in self._slots:
                if slot.process is None:
                    if now >= slot.restart_at:
                        self._spawn(slot)
                    continue
                code = slot.process.poll()
                if code is not None:
                    self._reap(slot, code, now)

    def _reap(self, slot: _Slot, code: int, now: float) -> None:
        assert slot.process is not None
        pid = slot.process.pid
        mark_process_dead(pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]
        slot.process = None
        self.metrics.workers_alive.set(self._alive())
        if code == EXIT_CANNOT_START:
            _log.error("worker cannot start; stopping", extra={"worker": slot.index, "pid": pid})
            self._exit_code = EXIT_CANNOT_START
            self._stop.set()
            return
        up = now - slot.started
        slot.crashes_in_a_row = 0 if up >= STABLE_SECONDS else slot.crashes_in_a_row + 1
        delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (slot.crashes_in_a_row - 1))
        delay = delay if slot.crashes_in_a_row else 0.0
        slot.restarts += 1
        slot.restart_at = now + delay
        self.metrics.worker_restarts.inc()
        reason = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        _log.error(
            "worker died; restarting",
            extra={"worker": slot.index, "pid": pid, "reason": reason, "uptime_s": round(up, 1),
                   "restart_in_s": delay},
        )  # fmt: skip

    def stop(self) -> int:
        """Forward SIGTERM, wait for every worker to drain, then release what we own."""
        grace = self.settings.shutdown_grace_seconds
        notice = self.settings.drain_notice()
        started = time.monotonic()
        running = [s.process for s in self._slots if s.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = started + notice + grace + WATCHDOG_MARGIN_SECONDS + KILL_MARGIN_SECONDS
        for process in running:
            try:
                code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _log.error("worker did not drain in time; killed", extra={"pid": process.pid})
                process.kill()
                code = process.wait()
            # -SIGTERM: a worker still starting, with nothing to drain, ends at once.
            if code not in (0, -signal.SIGTERM) and self._exit_code == 0:
                self._exit_code = 1
        self.metrics.workers_alive.set(0)
        left = started + notice + grace + SUPERVISOR_MARGIN_SECONDS - time.monotonic()
        budget = ShutdownBudget(max(left, 0.0))
        if self._metrics_server is not None:
            budget.run("metrics-server", self._metrics_server.shutdown)
            self._metrics_server.server_close()
        if self._private_redis is not None:
            budget.run("private-redis", self._private_redis.stop)
        if self._port_holder is not None:
            self._port_holder.close()
        shutil.rmtree(self._metrics_dir, ignore_errors=True)
        _log.info("gateway stopped", extra={"exit_code": self._exit_code})
        return self._exit_code


def supervise(settings: Settings) -> int:
    """Run N workers until SIGTERM or SIGINT, then drain them all; returns the exit code."""
    stop = start_process(settings, "draining workers")
    supervisor = Supervisor(settings, stop)
    try:
        supervisor.start()
    except (SupervisorError, PrivateRedisError) as exc:
        _log.error("cannot start", extra={"reason": str(exc)})
        supervisor.stop()
        return EXIT_CANNOT_START
    supervisor.run()
    start_watchdog(settings.drain_notice() + settings.shutdown_grace_seconds + 2.0)
    return supervisor.stop()
