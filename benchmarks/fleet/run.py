"""One measurement: a fresh deployment, the registry seeded, N simulated gateways started in
a few processes, a warm-up, the measured interval, then the rule changes, the key census."""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchmarks.fleet.census import key_census, prediction_bytes
from benchmarks.fleet.changes import drive_changes, propagation
from benchmarks.fleet.deployments import deployment, snapshot
from benchmarks.fleet.figures import redis_figures, simulator_figures
from benchmarks.fleet.payloads import Payloads
from benchmarks.fleet.plan import Cadence, Workload, model_names
from benchmarks.fleet.seed import seed_registry
from benchmarks.fleet.worker import WorkerSpec, run_worker
from benchmarks.servers import registry_when_up

__all__ = ["Options", "measure"]

READY_TIMEOUT_SECONDS = 300.0
HINT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Options:
    """How one measurement runs (the command line's flags)."""

    warmup: float
    duration: float
    changes: int
    replicas_per_process: int
    threads: int
    server_cpu: str | None
    census_samples: int
    size_predictions: bool
    without: tuple[str, ...] = ()  # kinds of task the simulated gateways leave out


def code_version() -> str:
    """The commit the simulated gateways run, and whether their packages differ from it:
    other work may change the tree between measurements (each starts its processes anew)."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=False).stdout.strip()  # fmt: skip

    head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "gateway",
                                                             "registry_client")  # fmt: skip
    return head + ("+changes" if dirty else "")


def _ask(workers: Sequence[Connection], request: tuple[Any, ...]) -> list[Any]:
    for worker in workers:
        worker.send(request)
    return [worker.recv() for worker in workers]


def _start_workers(
    url: str, replicas: int, workload: Workload, cadence: Cadence, payloads: Payloads,
    options: Options, seed: int,
) -> tuple[list[Any], list[Connection]]:  # fmt: skip
    context = multiprocessing.get_context("spawn")  # no threads or sockets inherited
    processes = max(1, math.ceil(replicas / options.replicas_per_process))
    names = [f"sim-{i:04d}" for i in range(replicas)]
    started, pipes = [], []
    for index in range(processes):
        mine = tuple(names[index::processes])
        spec = WorkerSpec(index, mine, url, workload, cadence, payloads, options.threads,
                          seed * 1000 + index, options.without)  # fmt: skip
        ours, theirs = context.Pipe()
        process = context.Process(target=run_worker, args=(spec, theirs), daemon=True)
        process.start()
        started.append(process)
        pipes.append(ours)
    for pipe in pipes:
        if not pipe.poll(READY_TIMEOUT_SECONDS):
            raise SystemExit("a simulator process did not start its gateways in time")
        _, subscribed = pipe.recv()
        if not subscribed:
            raise SystemExit("a simulator process has no gateway subscribed to the hints")
    return started, pipes


def _stop_workers(processes: list[Any], pipes: list[Connection]) -> None:
    for pipe in pipes:
        try:
            pipe.send(("stop",))
        except (BrokenPipeError, OSError):
            continue
    for pipe in pipes:
        if pipe.poll(30):
            pipe.recv()
    for process in processes:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(5)


def measure(
    kind: str, replicas: int, workload: Workload, cadence: Cadence, payloads: Payloads,
    options: Options, work: Path, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Run one measurement of `replicas` simulated gateways on a fresh deployment of `kind`."""
    rng = random.Random(seed)
    code = code_version()
    home = work / f"{kind}-{replicas}-{seed}"
    with deployment(kind, home, options.server_cpu) as running:
        registry = registry_when_up(running.url, timeout_s=30)
        seed_registry(registry, running.url, home, workload, replicas)
        baseline = snapshot(running)
        load_before = os.getloadavg()[0]
        processes, pipes = _start_workers(running.url, replicas, workload, cadence, payloads,
                                          options, seed)  # fmt: skip
        try:
            time.sleep(options.warmup)
            before, marks_before = snapshot(running), _ask(pipes, ("mark",))
            time.sleep(options.duration)
            after, marks_after = snapshot(running), _ask(pipes, ("mark",))
            seconds = sum(m["at"] for m in marks_after) - sum(m["at"] for m in marks_before)
            seconds /= len(pipes)
            model = model_names(workload.models)[0]
            canary = round(workload.canary_share * 100)
            changes, missing = drive_changes(registry, pipes, model, options.changes, canary,
                                             HINT_TIMEOUT_SECONDS, rng)  # fmt: skip
            time.sleep(cadence.rules_poll + 0.5)  # the last change's scheduled polls
            reports = _ask(pipes, ("report",))
        finally:
            _stop_workers(processes, pipes)
        gateways = {name: found for r in reports for name, found in r["gateways"].items()}
        result: dict[str, Any] = {
            "kind": kind, "replicas": replicas, "seconds": round(seconds, 2), "code": code,
            "processes": len(pipes), "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "redis": redis_figures(baseline, before, after, seconds, replicas),
            "simulator": simulator_figures(
                marks_before, marks_after,
                {k: p for k, p in cadence.periods().items() if k not in options.without},
                replicas, 0.0 if "prediction-log" in options.without
                else workload.requests_per_second,
            ),
            "propagation": {**propagation(changes, gateways), "missing": missing},
            "reconnects": sum(r["reconnects"] for r in reports),
            "task_errors": [e for r in reports for e in r["errors"]][:5],
            "census": key_census(running, registry.keys.prefix, options.census_samples),
        }  # fmt: skip
        if options.size_predictions and kind == "single":
            result["prediction_bytes"] = prediction_bytes(registry, running, workload)
        registry.close()
    return result
