"""Soak: a million requests while the canary weights change every 10 s and Redis restarts every
60 s; the gateway's resources must end where they started and no request may fail.

Requirement: 1,000,000 requests with a weight change every 10 s and a Redis restart every 60 s;
RSS, open file descriptors, threads (the gateway runs no asyncio loop: its tasks are threads)
and Redis clients at start and end flat (RSS within 20 MB, the counts within +-1%, which for
counts under 100 means unchanged), 0 errors. The Redis connection counts are judged by bound,
not by equality: the pool opens connections on demand (1-3 here) and every restart closes them,
so "flat" means never above the most seen before the first restart (a leak passes it); the
same for the open fds, which include those connections. Threads must be unchanged.

The gateway runs as users run it against a shared registry: `onnxgate serve --redis-url ...`
following the registry (no --models), pinned to CPU 0. This driver owns the redis-server
(append-only file, so a restart keeps the registry; SIGTERM, wait for the exit, start again on
the same port), registers the tiny model with two versions (different weights), routes 90/10,
then runs the closed loop (memory_growth.py's workers, every non-OK answer counted by status
code) from CPU 1, while one thread changes the weights through RegistryClient.set_route every
--weight-every seconds and another restarts redis-server every --redis-restart-every seconds.
The start sample is taken after --warmup requests, the end sample after the last one, both
with the load stopped, Redis up, the gateway reconnected and --settle-s idle; a sample line is
printed every --sample-every seconds in between (under load). Exit code 1 when a target is
missed, a request failed or the run broke.

    .venv/bin/python benchmarks/soak.py                  # the full 1,000,000-request soak
    .venv/bin/python benchmarks/soak.py --requests 50000 --redis-restart-every 15 --weight-every 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import cycle
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import redis
from bench_report import failures_section, fmt, scrape, total
from driver import finish_judged, judge, run_in_work_dir
from load import CHANNEL_OPTIONS
from memory_growth import (
    LoadState,
    ProcSample,
    closed_loop_client,
    mib,
    prepare_client_process,
    proc_sample,
    run_to,
)
from models import build_repository
from onnx import numpy_helper
from servers import (
    CLIENT_CPU,
    HOST,
    ROOT,
    SERVER_CPU,
    BenchError,
    check_alive,
    free_port,
    port_pair,
    start_server,
    tail,
)

from registry_client.client import RegistryClient
from registry_client.errors import RegistryError
from registry_client.records.rule_documents import Split

HERE = Path(__file__).resolve().parent
MODEL = "tiny"
VERSIONS = ("1", "2")
ACTOR = "benchmarks/soak.py"
# Version 1's share of each rule in turn; version 2 (the canary) gets the rest.
WEIGHTS = (90, 70, 50, 30, 10, 30, 50, 70)
RSS_TARGET_MB = 20.0  # decimal megabytes, as the requirement is written
COUNT_TARGET = 0.01  # +-1% of the start value
MB = 1_000_000
POLL_S = 0.1
REDIS_STOP_TIMEOUT_S = 30.0
REDIS_START_TIMEOUT_S = 30.0
RETRY_S = 0.5  # a weight change that met a restarting Redis is tried again this often
GATEWAY_LOG_LEVELS = ("WARNING", "ERROR", "CRITICAL")


# --- redis-server -------------------------------------------------------------------------


class RedisProcess:
    """A redis-server on 127.0.0.1:port with an append-only file: restarted on the same port
    it comes back with what was written."""

    def __init__(self, directory: Path, port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.url = f"redis://{HOST}:{port}/0"
        self.log = directory / "redis.log"
        self.command = [
            "redis-server", "--port", str(port), "--bind", HOST, "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--protected-mode", "yes", "--logfile", str(self.log),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait until it answers PING; returns the seconds that took."""
        started = time.monotonic()
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
        client = redis.Redis(host=HOST, port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    client.ping()
                    return time.monotonic() - started
                except redis.ConnectionError:
                    if self.proc.poll() is not None:
                        raise BenchError(
                            f"redis-server exited {self.proc.returncode}:"
                            f" {tail(self.log.read_bytes())}"
                        ) from None
                    if time.monotonic() - started > REDIS_START_TIMEOUT_S:
                        raise BenchError("redis-server did not answer PING") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> float:
        """SIGTERM (Redis writes its append-only file and exits), wait; returns the seconds."""
        started = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(REDIS_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(REDIS_STOP_TIMEOUT_S)
                raise BenchError("redis-server ignored SIGTERM; killed") from None
        return time.monotonic() - started

    def restart(self) -> tuple[float, float]:
        """Stop then start on the same port; returns (stop seconds, start seconds)."""
        return self.stop(), self.start()


# --- chaos: weight changes and restarts -----------------------------------------------------


@dataclass
class Event:
    """One weight change or restart, as it happened."""

    at_s: float  # since the chaos started
    what: str
    seconds: float  # how long it took (a restart: Redis down)
    detail: str = ""


@dataclass
class Chaos:
    """The two background threads and what they did; stop() ends both with Redis up."""

    registry: RegistryClient
    redis: RedisProcess
    weight_every: float
    restart_every: float
    started: float = 0.0
    events: list[Event] = field(default_factory=list)
    weight_changes: int = 0
    weight_retries: int = 0  # attempts that met Redis restarting (Unreachable), then retried
    restarts: int = 0
    last_revision: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # restarts vs stop()
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.started = time.monotonic()
        self._threads = [
            threading.Thread(target=self._change_weights, name="soak-weights", daemon=True),
            threading.Thread(target=self._restart_redis, name="soak-restarts", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both threads; Redis is up when this returns (a restart in progress finishes)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REDIS_STOP_TIMEOUT_S + REDIS_START_TIMEOUT_S + 10)
        with self._lock:
            if self.redis.proc is None or self.redis.proc.poll() is not None:
                self.redis.start()

    def _now(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def _change_weights(self) -> None:
        weights = cycle(WEIGHTS)
        while not self._stop.wait(self.weight_every):
            first = next(weights)
            split = [Split(VERSIONS[0], first), Split(VERSIONS[1], 100 - first)]
            begun = time.monotonic()
            while not self._stop.is_set():
                try:
                    rule = self.registry.set_route(
                        MODEL, split, actor=ACTOR, reason=f"soak: {first}/{100 - first}"
                    )
                except RegistryError as err:  # Redis restarting: try again shortly
                    self.weight_retries += 1
                    detail = str(err)
                    self._stop.wait(RETRY_S)
                    continue
                self.weight_changes += 1
                self.last_revision = rule.revision
                detail = f"{first}/{100 - first} revision {rule.revision}"
                self.events.append(
                    Event(self._now(), "weights", round(time.monotonic() - begun, 3), detail)
                )
                break

    def _restart_redis(self) -> None:
        while not self._stop.wait(self.restart_every):
            with self._lock:
                try:
                    stopped_s, started_s = self.redis.restart()
                except BenchError as err:
                    self.failures.append(f"restart {self.restarts + 1}: {err}")
                    return
                self.restarts += 1
            down = round(stopped_s + started_s, 3)
            detail = f"stop {stopped_s:.2f} s, start {started_s:.2f} s"
            self.events.append(Event(self._now(), "redis restart", down, detail))
            print(f"   redis restart {self.restarts}: down {down:.2f} s ({detail})", flush=True)


# --- sampling -------------------------------------------------------------------------------


@dataclass
class Sample:
    """The gateway's resources and the run's counts at one moment."""

    label: str
    at_s: float  # load time since the start sample (0 for it)
    requests: int  # answered, OK or not
    errors: dict[str, int]  # client side, cumulative, by status code
    rps: float  # since the previous sample
    gateway: ProcSample
    gateway_redis_connections: int  # the gateway's established TCP connections to Redis
    redis_clients: int | None  # INFO clients connected_clients (every client, this one too)
    redis_connected: float  # the gateway's onnxgate_redis_connected gauge
    route_revision: float  # the rule revision the gateway serves
    flush_failures: float
    restarts: int
    weight_changes: int
    at: str = ""


def socket_inodes(pid: int) -> set[str]:
    """The inodes of a process's open sockets."""
    inodes: set[str] = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    return inodes


def connections_to(pid: int, port: int) -> int:
    """A process's established TCP connections to a local port (/proc/PID/net/tcp)."""
    mine = socket_inodes(pid)
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
        if remote_port == port and fields[3] == "01" and fields[9] in mine:  # 01: ESTABLISHED
            count += 1
    return count


def redis_clients(client: redis.Redis) -> int | None:
    """connected_clients, or None while Redis is away."""
    try:
        return int(client.info("clients")["connected_clients"])
    except redis.RedisError:
        return None


@dataclass
class Sampler:
    """Reads the gateway process, its metrics and Redis."""

    pid: int
    metrics_port: int
    redis: RedisProcess
    chaos: Chaos | None = None
    client: redis.Redis = field(init=False)

    def __post_init__(self) -> None:
        self.client = redis.Redis(
            host=HOST, port=self.redis.port, socket_timeout=2, socket_connect_timeout=2
        )

    def check_alive(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        """Raise BenchError if the gateway has exited."""
        check_alive(proc, log)

    def take(self, label: str, state: LoadState, at_s: float, rps: float) -> Sample:
        """One sample: /proc first (the scrape starts a thread in the gateway)."""
        memory = proc_sample(self.pid)
        conns = connections_to(self.pid, self.redis.port)
        samples = scrape(self.metrics_port)
        chaos = self.chaos
        return Sample(
            label=label,
            at_s=round(at_s, 1),
            requests=state.done,
            errors=dict(sorted(state.errors.items())),
            rps=round(rps, 1),
            gateway=memory,
            gateway_redis_connections=conns,
            redis_clients=redis_clients(self.client),
            redis_connected=total(samples, "onnxgate_redis_connected"),
            route_revision=total(samples, "onnxgate_route_revision", model=MODEL),
            flush_failures=total(samples, "onnxgate_flush_failures_total"),
            restarts=0 if chaos is None else chaos.restarts,
            weight_changes=0 if chaos is None else chaos.weight_changes,
            at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )

    def wait_following(self, revision: int, timeout_s: float) -> float:
        """Wait until the gateway is connected to Redis and serves `revision`; returns the
        seconds that took."""
        started = time.monotonic()
        seen = (-1.0, -1.0)
        while time.monotonic() - started < timeout_s:
            samples = scrape(self.metrics_port)
            seen = (
                total(samples, "onnxgate_redis_connected"),
                total(samples, "onnxgate_route_revision", model=MODEL),
            )
            if seen == (1.0, float(revision)):
                return time.monotonic() - started
            time.sleep(POLL_S)
        raise BenchError(
            f"gateway not following after {timeout_s:.0f} s: redis_connected {seen[0]:g},"
            f" serving revision {seen[1]:g} of {revision}"
        )


def describe(s: Sample, start: Sample | None) -> str:
    """One progress line."""
    delta = "" if start is None else f" ({mib(s.gateway.rss_kib - start.gateway.rss_kib):+.2f})"
    return (
        f"   {s.label:>8} {s.requests:>10,d} requests: RSS {mib(s.gateway.rss_kib):6.1f} MiB"
        f"{delta}  fds {s.gateway.fds}  threads {s.gateway.threads}  redis conns"
        f" {s.gateway_redis_connections} (server clients {fmt(s.redis_clients, 'd')})"
        f"  | {s.rps:,.0f} req/s, errors {sum(s.errors.values())}  | restarts {s.restarts},"
        f" weight changes {s.weight_changes}, serving revision {s.route_revision:g},"
        f" redis_connected {s.redis_connected:g}"
    )


# --- load -----------------------------------------------------------------------------------


async def sample_every(
    sampler: Sampler, state: LoadState, rows: list[Sample], args: argparse.Namespace
) -> None:
    """Under load: a sample and a line every --sample-every seconds."""
    started = last_t = time.perf_counter()
    last_done = state.done
    while True:
        await asyncio.sleep(args.sample_every)
        now = time.perf_counter()
        rate = (state.done - last_done) / (now - last_t)
        label = f"+{now - started:.0f}s"
        row = await asyncio.to_thread(sampler.take, label, state, now - started, rate)
        rows.append(row)
        print(describe(row, rows[0]), flush=True)
        last_t, last_done = now, state.done


async def drive(
    args: argparse.Namespace, port: int, sampler: Sampler, chaos: Chaos, rows: list[Sample]
) -> float:
    """Warm up, sample, load to --requests under chaos, stop the chaos, sample; returns the
    seconds of load after the warm-up."""
    async with grpc.aio.insecure_channel(f"{HOST}:{port}", options=CHANNEL_OPTIONS) as channel:
        call, payload, state = await closed_loop_client(channel, args.seed)
        print(f"== warm-up: {args.warmup:,d} requests", flush=True)
        await run_to(call, payload, state, args.warmup, args, ticking=False)
        if state.ok == 0:
            raise BenchError(f"every warm-up request failed: {dict(state.errors)}")
        await asyncio.to_thread(sampler.wait_following, chaos.last_revision, args.apply_timeout)
        await asyncio.sleep(args.settle_s)
        rows.append(await asyncio.to_thread(sampler.take, "start", state, 0.0, 0.0))
        print(describe(rows[0], None), flush=True)
        print(
            f"== load: {args.requests - args.warmup:,d} requests, concurrency"
            f" {args.concurrency}; weights every {args.weight_every:g} s, redis restart every"
            f" {args.redis_restart_every:g} s",
            flush=True,
        )
        sampler.chaos = chaos
        chaos.start()
        ticker = asyncio.create_task(sample_every(sampler, state, rows, args))
        try:
            seconds = await run_to(call, payload, state, args.requests, args, ticking=False)
        finally:
            ticker.cancel()
            await asyncio.to_thread(chaos.stop)
        rate = (state.done - args.warmup) / seconds
        print(f"== load done in {seconds:.1f} s ({rate:,.0f} req/s); chaos stopped", flush=True)
        await asyncio.to_thread(sampler.wait_following, chaos.last_revision, args.apply_timeout)
        await asyncio.sleep(args.settle_s)
        rows.append(await asyncio.to_thread(sampler.take, "end", state, seconds, rate))
        print(describe(rows[-1], rows[0]), flush=True)
        return seconds


# --- setup ----------------------------------------------------------------------------------


def build_versions(repo: Path) -> None:
    """REPO/tiny/1 (benchmarks/models.py's tiny model) and REPO/tiny/2, the same graph with
    other output-layer weights, so the two versions answer differently."""
    build_repository(repo, [MODEL])
    model = onnx.load(str(repo / MODEL / "1" / "model.onnx"))
    weights = [w for w in model.graph.initializer if w.name.endswith("_W")][-1]
    shifted = numpy_helper.to_array(weights) + np.random.default_rng(2).normal(
        0, 0.1, tuple(weights.dims)
    ).astype(np.float32)
    weights.CopyFrom(numpy_helper.from_array(shifted, weights.name))
    (repo / MODEL / "2").mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(repo / MODEL / "2" / "model.onnx"))


def register(registry: RegistryClient, repo: Path) -> int:
    """Register the model and both versions, route 90/10; returns the rule's revision."""
    registry.create_model(MODEL, actor=ACTOR, description="soak: canary weights keep changing")
    for version in VERSIONS:
        path = repo / MODEL / version / "model.onnx"
        registry.register_version(MODEL, version, path, actor=ACTOR)
    first = WEIGHTS[0]
    split = [Split(VERSIONS[0], first), Split(VERSIONS[1], 100 - first)]
    return registry.set_route(MODEL, split, actor=ACTOR, reason="soak: first rule").revision


def gateway_command(args: argparse.Namespace, redis_url: str, port: int, metrics: int) -> list[str]:
    """`onnxgate serve` following the registry at redis_url (no --models)."""
    return [
        str(args.onnxgate), "serve", "--redis-url", redis_url, "--host", HOST,
        "--grpc-port", str(port), "--metrics-port", str(metrics),
        *shlex.split(args.gateway_args),
    ]  # fmt: skip


def log_levels(log: Path) -> dict[str, int]:
    """The gateway's log lines at WARNING and above, counted by level and message."""
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("level") in GATEWAY_LOG_LEVELS:
                counts[f"{entry['level']}: {entry.get('message', '')}"] += 1
    return dict(counts.most_common())


def measure(
    args: argparse.Namespace, work: Path, rows: list[Sample], extra: dict[str, Any]
) -> None:
    """Start Redis, register, start the gateway, then drive the soak to the end."""
    build_versions(work / "repo")
    redis_server = RedisProcess(work / "redis", free_port())
    redis_server.start()
    try:
        registry = RegistryClient.from_url(redis_server.url)
        try:
            revision = register(registry, work / "repo")
            run_gateway(args, work, redis_server, registry, revision, rows, extra)
        finally:
            registry.close()
    finally:
        redis_server.stop()


def run_gateway(
    args: argparse.Namespace, work: Path, redis_server: RedisProcess, registry: RegistryClient,
    revision: int, rows: list[Sample], extra: dict[str, Any],
) -> None:  # fmt: skip
    """The gateway's part of the run; its log is read at the end, whatever happened."""
    port, metrics_port = port_pair()
    cmd = gateway_command(args, redis_server.url, port, metrics_port)
    extra["gateway_command"] = shlex.join(cmd)
    log = work / "gateway.log"
    label = f"gateway (CPU {SERVER_CPU})"
    chaos = Chaos(registry, redis_server, args.weight_every, args.redis_restart_every)
    chaos.last_revision = revision
    try:
        with contextlib.ExitStack() as stack:
            proc = start_server(stack, label, cmd, log, port, MODEL, args.ready_timeout)
            sampler = Sampler(proc.pid, metrics_port, redis_server)
            try:
                extra["load_s"] = asyncio.run(drive(args, port, sampler, chaos, rows))
                sampler.check_alive(proc, log)
                samples = scrape(metrics_port)
                extra["served"] = {
                    version: total(samples, "onnxgate_requests_total", model=MODEL,
                                   version=version, role="primary")
                    for version in VERSIONS
                }  # fmt: skip
                extra["served_failed"] = total(
                    samples, "onnxgate_requests_total", model=MODEL, role="primary"
                ) - total(samples, "onnxgate_requests_total", model=MODEL, role="primary",
                          code="OK")  # fmt: skip
            finally:
                sampler.client.close()
    finally:
        chaos.stop()  # a failure midway leaves the threads running otherwise
        extra["events"] = [asdict(e) for e in chaos.events]
        extra["weight_changes"] = chaos.weight_changes
        extra["weight_retries"] = chaos.weight_retries
        extra["restarts"] = chaos.restarts
        extra["last_revision"] = chaos.last_revision
        extra["failures"] += chaos.failures
        if log.exists():
            extra["gateway_log"] = log_levels(log)


# --- results --------------------------------------------------------------------------------


def within(start: int, end: int) -> bool:
    """|end - start| within +-1% of start (unchanged, for counts under 100)."""
    return abs(end - start) <= COUNT_TARGET * start


def before_first_restart(rows: list[Sample], value: Callable[[Sample], int]) -> int:
    """The highest value before the first Redis restart: the mark a count that moves with the
    pool (which opens connections when its background threads overlap; every restart closes
    them) stays under by itself, and a leak passes."""
    return max(value(r) for r in rows if r.restarts == 0)


def verdict(rows: list[Sample], extra: dict[str, Any]) -> dict[str, Any]:
    """Start against end, against the targets."""
    start, end = rows[0], rows[-1]
    rss_bytes = (end.gateway.rss_kib - start.gateway.rss_kib) * 1024
    counts = {
        "fds": (start.gateway.fds, end.gateway.fds),
        "threads": (start.gateway.threads, end.gateway.threads),
        "gateway_redis_connections": (
            start.gateway_redis_connections,
            end.gateway_redis_connections,
        ),
        "redis_clients": (start.redis_clients or 0, end.redis_clients or 0),
    }
    errors = sum(end.errors.values())
    marks = {
        "fds": before_first_restart(rows, lambda r: r.gateway.fds),
        "gateway_redis_connections": before_first_restart(
            rows, lambda r: r.gateway_redis_connections
        ),
        "redis_clients": before_first_restart(rows, lambda r: r.redis_clients or 0),
    }
    checks = {
        "rss": abs(rss_bytes) <= RSS_TARGET_MB * MB,
        "fds": max(r.gateway.fds for r in rows) <= marks["fds"],
        "threads": within(*counts["threads"]),
        "gateway_redis_connections": max(r.gateway_redis_connections for r in rows)
        <= marks["gateway_redis_connections"],
        "redis_clients": max(r.redis_clients or 0 for r in rows) <= marks["redis_clients"],
        "errors": errors == 0,
    }
    return {
        "rss_start_kib": start.gateway.rss_kib,
        "rss_end_kib": end.gateway.rss_kib,
        "rss_delta_mib": round(rss_bytes / 1024 / 1024, 3),
        "rss_max_kib": max(r.gateway.rss_kib for r in rows),
        "counts": {k: {"start": a, "end": b, "delta": b - a} for k, (a, b) in counts.items()},
        "errors": errors,
        "errors_by_code": end.errors,
        "requests": end.requests,
        "load_rps": round((end.requests - start.requests) / extra["load_s"], 1),
        "marks_before_first_restart": marks,
        "checks": checks,
        "passed": all(checks.values()),
    }


def report(args: argparse.Namespace, env: dict[str, Any], rows: list[Sample],
           extra: dict[str, Any]) -> str:  # fmt: skip
    """Render the Markdown report."""
    lines = [
        f"# Soak: {MODEL} model, {args.requests:,d} requests, weights every"
        f" {args.weight_every:g} s, Redis restart every {args.redis_restart_every:g} s",
        "",
        f"Command: `{env['command']}`",
        "",
        f"Gateway (CPU {SERVER_CPU}): `{extra.get('gateway_command', '-')}`; closed loop,"
        f" concurrency {args.concurrency}, client on CPU {CLIENT_CPU}; redis-server with an"
        " append-only file, restarted by SIGTERM and started again on the same port.",
        "",
        f"Machine: {env['date']}, {env['cpu']}, nproc {env['nproc']}, Python {env['python']},"
        f" grpcio {env['grpcio']}, onnxruntime {env['onnxruntime']}, {env['redis_server']};"
        f" git {env['git']}. Load average at start {env['loadavg_start']}, at end"
        f" {env.get('loadavg_end')}.",
        "",
    ]
    v = extra.get("verdict")
    if v is not None:
        lines += verdict_lines(v, extra)
    if rows:
        lines += ["", *sample_table(rows)]
    lines += ["", *event_lines(extra)]
    lines += failures_section(extra["failures"])
    return "\n".join(lines)


def verdict_lines(v: dict[str, Any], extra: dict[str, Any]) -> list[str]:
    """The targets, start against end."""
    ok = {True: "met", False: "**missed**"}
    checks = v["checks"]
    by_code = f" {v['errors_by_code']}" if v["errors_by_code"] else ""
    lines = [
        f"**{'PASS' if v['passed'] else 'FAIL'}**: {v['requests']:,d} requests,"
        f" {v['errors']} errors{by_code}, {v['load_rps']:,.0f} req/s after"
        " the warm-up.",
        "",
        "| what | start | end | delta | target | |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        f"| RSS MiB | {mib(v['rss_start_kib']):.1f} | {mib(v['rss_end_kib']):.1f}"
        f" | {v['rss_delta_mib']:+.2f} | within {RSS_TARGET_MB:g} MB | {ok[checks['rss']]} |",
    ]
    marks = v["marks_before_first_restart"]

    def bound(key: str) -> str:
        return f"every sample <= {marks[key]}, the most before the first restart"

    names = {
        "fds": ("open fds", bound("fds")),
        "threads": ("threads", "+-1%"),
        "gateway_redis_connections": ("gateway's TCP connections to Redis",
                                      bound("gateway_redis_connections")),
        "redis_clients": ("Redis connected_clients (all)", bound("redis_clients")),
    }  # fmt: skip
    for key, (label, target) in names.items():
        c = v["counts"][key]
        lines.append(
            f"| {label} | {c['start']} | {c['end']} | {c['delta']:+d} | {target}"
            f" | {ok[checks[key]]} |"
        )
    lines.append(f"| errors | | {v['errors']} | | 0 | {ok[checks['errors']]} |")
    lines += [
        "",
        f"Peak RSS over the samples {mib(v['rss_max_kib']):.1f} MiB. Weight changes applied"
        f" {extra.get('weight_changes')} (attempts that met Redis restarting and were retried:"
        f" {extra.get('weight_retries')}), Redis restarts {extra.get('restarts')}; the gateway"
        f" ended serving revision {extra.get('last_revision')}. Served per version (gateway"
        f" counters): {extra.get('served')}, failed {extra.get('served_failed')}. Gateway log"
        f" lines at WARNING and above: {extra.get('gateway_log') or 'none'}.",
    ]
    return lines


def sample_table(rows: list[Sample]) -> list[str]:
    """Every sample; deltas from the start sample."""
    start = rows[0]
    lines = [
        "| sample | requests | RSS MiB | delta MiB | fds | threads | gateway redis conns"
        " | redis clients | req/s | errors | restarts | weight changes | serving revision"
        " | flush failures |",
        "|" + " --- |" + " ---: |" * 13,
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.requests:,d} | {mib(r.gateway.rss_kib):.1f}"
            f" | {mib(r.gateway.rss_kib - start.gateway.rss_kib):+.2f} | {r.gateway.fds}"
            f" | {r.gateway.threads} | {r.gateway_redis_connections}"
            f" | {fmt(r.redis_clients, 'd')} | {r.rps:,.0f} | {sum(r.errors.values())}"
            f" | {r.restarts} | {r.weight_changes} | {r.route_revision:g}"
            f" | {r.flush_failures:g} |"
        )
    return lines


def event_lines(extra: dict[str, Any]) -> list[str]:
    """Redis restarts: how long Redis was away."""
    restarts = [e for e in extra.get("events", []) if e["what"] == "redis restart"]
    if not restarts:
        return []
    down = [e["seconds"] for e in restarts]
    times = ", ".join(f"{e['at_s']:.0f}" for e in restarts)
    return [
        f"Redis restarts: {len(restarts)}, down {min(down):.2f}-{max(down):.2f} s each"
        f" (at {times} s)."
    ]


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1_000_000, help="in all, warm-up included")
    p.add_argument(
        "--warmup",
        type=int,
        default=150_000,
        help="requests before the start sample: past the first flushes and drift refresh",
    )
    p.add_argument("--weight-every", type=float, default=10.0, help="seconds between rules")
    p.add_argument(
        "--redis-restart-every", type=float, default=60.0, help="seconds between restarts"
    )
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    p.add_argument("--sample-every", type=float, default=30.0, help="seconds between lines")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request deadline (s)")
    p.add_argument(
        "--settle-s",
        type=float,
        default=5.0,
        help="idle before start and end: the client's 32 connections closing is not a trend",
    )
    p.add_argument("--apply-timeout", type=float, default=60.0, help="rule followed within (s)")
    p.add_argument("--gateway-args", default="", help="extra flags for onnxgate serve")
    p.add_argument("--onnxgate", type=Path, default=ROOT / ".venv" / "bin" / "onnxgate")
    p.add_argument("--ready-timeout", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0, help="of the request's random input")
    p.add_argument("--out", type=Path, default=HERE / "out" / "soak.md")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    if not 0 < args.concurrency <= args.warmup < args.requests:
        p.error("need 0 < --concurrency <= --warmup < --requests")
    if min(args.weight_every, args.redis_restart_every, args.sample_every) <= 0:
        p.error("--weight-every, --redis-restart-every and --sample-every must be > 0")
    if "--workers" in shlex.split(args.gateway_args):
        p.error("--workers: the sampler reads one gateway process, not a supervisor's workers")
    return args


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = parse_args(argv)
    env = prepare_client_process()
    rows: list[Sample] = []
    extra: dict[str, Any] = {"failures": []}
    run_in_work_dir(
        "onnxgate-soak-", args.keep_work, lambda work: measure(args, work, rows, extra),
        extra["failures"], (BenchError, RegistryError, redis.RedisError, grpc.RpcError),
        lambda: f"after {len(rows)} samples",
    )  # fmt: skip
    reached = len(rows) >= 2 and rows[-1].label == "end"
    judge(env, extra, reached, lambda: verdict(rows, extra), "the run ended before the end sample")
    text = report(args, env, rows, extra)
    return finish_judged(args, env, text, extra, samples=[asdict(r) for r in rows])


if __name__ == "__main__":
    sys.exit(main())
