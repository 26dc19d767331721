"""A simulator process: some of the simulated gateways, their hint threads and the scheduler
running their tasks; answers the coordinator's requests over a pipe.

Requests: ("mark",) -> this process's counters now; ("await", since, timeout_s) -> once every
gateway here has received a hint since monotonic time `since` and read the rules after it (or
the timeout passed), how many have no hint;
("report",) -> every gateway's hint, resync and poll times; ("stop",) -> stops and exits.
"""

from __future__ import annotations

import os
import random
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import CollectorRegistry

from benchmarks.fleet.hints import HintListeners
from benchmarks.fleet.payloads import Payloads
from benchmarks.fleet.plan import Cadence, Workload
from benchmarks.fleet.replica import SimulatedGateway
from benchmarks.fleet.schedule import Scheduler
from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.metrics.rollout import RolloutMetrics

__all__ = ["WorkerSpec", "run_worker"]

LAG_PROBE_SECONDS = 0.01  # how often the probe asks for the CPU; its oversleep is the lag


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What one simulator process runs."""

    index: int
    replicas: tuple[str, ...]
    url: str
    workload: Workload
    cadence: Cadence
    payloads: Payloads
    threads: int
    seed: int
    without: tuple[str, ...] = ()  # kinds of task left out


class _LagProbe:
    """How late a thread that sleeps LAG_PROBE_SECONDS wakes: the process's queueing for the
    CPU and the GIL, which every hint's arrival time includes too."""

    def __init__(self, stop: threading.Event) -> None:
        self.lags: list[float] = []
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name="fleet-lag", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            time.sleep(LAG_PROBE_SECONDS)
            self.lags.append(time.monotonic() - started - LAG_PROBE_SECONDS)


def _raise_file_limit() -> None:
    # A few connections per simulated gateway: hundreds of them pass the usual soft limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_worker(spec: WorkerSpec, conn: Connection) -> None:
    """The simulator process's body (multiprocessing target)."""
    _raise_file_limit()
    # A thread woken by a socket waits at most this long for the GIL: a hint's arrival is
    # noted within a millisecond, not the default five.
    sys.setswitchinterval(0.001)
    rng = random.Random(spec.seed)
    metrics = (GatewayMetrics(CollectorRegistry()), RolloutMetrics(CollectorRegistry()))
    gateways = [
        SimulatedGateway(
            name,
            spec.url,
            spec.workload,
            spec.cadence,
            spec.payloads,
            metrics,
            spec.seed * 100_003 + i,
        )
        for i, name in enumerate(spec.replicas)
    ]
    arrivals = threading.Condition()
    listeners = HintListeners(gateways, _notifier(arrivals))
    subscribed = listeners.subscribe_all()
    listeners.start()
    for gateway in gateways:
        gateway.start_configs()
    scheduler = Scheduler(spec.threads)
    periods = spec.cadence.periods()
    now = time.monotonic()
    for gateway in gateways:  # each gateway started at its own moment: phases spread out
        for kind, work in gateway.tasks():
            if kind in spec.without:
                continue
            scheduler.every(kind, periods[kind], work, now + rng.uniform(0, periods[kind]))
    scheduler.start()
    stop = threading.Event()
    probe = _LagProbe(stop)
    conn.send(("ready", subscribed))
    try:
        while True:
            request = conn.recv()
            if request[0] == "mark":
                conn.send(_mark(scheduler, gateways, probe))
            elif request[0] == "await":
                conn.send(_await(gateways, arrivals, request[1], request[2]))
            elif request[0] == "report":
                conn.send(_report(gateways, scheduler, listeners.reconnects))
            else:
                break
    finally:
        stop.set()
        scheduler.stop()
        listeners.stop()
        for gateway in gateways:
            gateway.close()
        conn.send(("stopped",))


def _notifier(arrivals: threading.Condition) -> Callable[[], None]:
    def arrived() -> None:
        with arrivals:
            arrivals.notify_all()

    return arrived


def _mark(
    scheduler: Scheduler, gateways: list[SimulatedGateway], probe: _LagProbe
) -> dict[str, Any]:
    times = os.times()
    return {
        "at": time.monotonic(),
        "cpu_seconds": times.user + times.system,
        "tasks": scheduler.counters(),
        "predictions": sum(g.predictions for g in gateways),
        "lags": list(probe.lags),
    }


def _await(
    gateways: list[SimulatedGateway], arrivals: threading.Condition, since: float, timeout: float
) -> int:
    deadline = time.monotonic() + timeout
    with arrivals:
        while True:
            missing = sum(1 for g in gateways if not g.hints or g.hints[-1] < since)
            reading = sum(1 for g in gateways if not g.resyncs or g.resyncs[-1] < since)
            left = deadline - time.monotonic()
            if reading == 0 or left <= 0:
                return missing
            arrivals.wait(left)


def _report(
    gateways: list[SimulatedGateway], scheduler: Scheduler, reconnects: int
) -> dict[str, Any]:
    return {
        "reconnects": reconnects,
        "gateways": {
            g.name: {
                "hints": list(g.hints),
                "resyncs": list(g.resyncs),
                "polled": list(g.polled),
            }
            for g in gateways
        },
        "errors": scheduler.errors(),
    }
