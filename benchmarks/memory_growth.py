"""Memory growth under traffic: the gateway's resident memory at fixed request counts.

Requirement: RSS after 1,000,000 requests minus RSS after 100,000 stays under 20 MB (the
gateway's memory must not grow with traffic). The gateway runs as users run it, everything on:
`onnxgate serve --models REPO` with its private registry (a redis-server in a temporary
--data-dir), so routing rules, per-version statistics, metrics and drift sketching all work;
pinned to CPU 0. This process is the closed-loop client (load.py's request helpers), pinned to
CPU 1. At each checkpoint the load stops with exactly that many requests answered, the gateway
idles --settle-s, then its VmRSS, VmHWM, threads and open fds are read from /proc, with the
private redis-server's RSS and used_memory beside them. Exit code 1 when the growth misses the
target, a request failed, or the run broke.

    .venv/bin/python benchmarks/memory_growth.py                     # the full 1M measurement
    .venv/bin/python benchmarks/memory_growth.py --with-shadow       # + 90/10 split + shadow
    .venv/bin/python benchmarks/memory_growth.py --checkpoints 2000,20000,50000  # a quick look
    .venv/bin/python benchmarks/memory_growth.py --malloc-stats ...  # in use vs free in malloc
    .venv/bin/python benchmarks/memory_growth.py --tracemalloc 8 ...  # where Python memory grows
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import redis
from bench_report import failures_section, fmt, scrape, total, wait_serving
from driver import (
    check_cpus,
    csv_list,
    environment,
    finish_judged,
    judge,
    on_sigterm,
    run_identity,
    run_in_work_dir,
)
from load import CHANNEL_OPTIONS, MODEL_INFER, RawCall, build_request, specs_from_metadata
from memory_hook import HOOK_DIR_ENV, TRACE_FRAMES_ENV, sitecustomize_source
from models import build_repository
from servers import (
    CLIENT_CPU,
    HOST,
    ROOT,
    SERVER_CPU,
    BenchError,
    GatewayProcess,
    port_pair,
    run_bounded,
    server_command,
    start_server,
)

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from registry_client.connection import private_redis_url

HERE = Path(__file__).resolve().parent
MODEL = "tiny"
ACTOR = "benchmarks/memory_growth.py"
CHECKPOINTS = [10_000, 100_000, 200_000, 500_000, 1_000_000]
BASELINE = 100_000
TARGET_MB = 20.0  # decimal megabytes, as the requirement is written
MB = 1_000_000
MIB = 1024 * 1024
PROGRESS_S = 15.0
GLIBC_HEAP_ALIGN = 64 * MIB  # glibc maps each thread arena heap at a multiple of 64 MiB
SMAPS_TOP = 12
ROUTE_POLL_S = 0.1
PROBE_TIMEOUT_S = 120.0  # a snapshot of a large traced heap takes seconds to write
TRACE_TOP = 15
# Frames of the tracing machinery itself: not the gateway's memory.
TRACE_IGNORE = (
    "<frozen importlib._bootstrap>",
    "<frozen importlib._bootstrap_external>",
    tracemalloc.__file__,
    str(HERE / "memory_hook.py"),
)
HOOK_LEGEND = [
    "Memory hook columns (memory_hook.py, loaded into the gateway via sitecustomize): malloc"
    " in use = glibc mallinfo2 uordblks + hblkhd over all arenas; malloc free = fordblks, free"
    " memory kept inside the arenas (growing while in use stays flat = fragmentation);"
    " obmalloc arenas = CPython small-object arenas held (1 MiB each, freed only when empty);"
    " obmalloc live = bytes in live Python blocks (flat while arenas grow = fragmentation).",
]


@dataclass
class ProcSample:
    """Memory and resources of one process, from /proc/<pid>/status and /proc/<pid>/fd."""

    rss_kib: int
    hwm_kib: int
    anon_kib: int
    file_kib: int
    threads: int
    fds: int


@dataclass
class Checkpoint:
    """Everything sampled once the client had `requests` answered (ok or failed)."""

    requests: int
    errors: dict[str, int]  # client side, cumulative, by status code
    load_s: float  # load time so far (settle and sampling pauses excluded)
    segment_rps: float  # since the previous checkpoint
    gateway: ProcSample
    server: dict[str, float]  # the gateway's own counters
    redis: ProcSample | None
    redis_used_memory: int | None
    mappings: dict[str, int] = field(default_factory=dict)  # RSS KiB by kind of mapping
    malloc: dict[str, int] | None = None  # glibc mallinfo2 in the gateway, when enabled
    pymalloc: dict[str, int] | None = None  # CPython obmalloc totals, when enabled
    traced_bytes: int | None = None  # Python heap traced by tracemalloc, when enabled
    at: str = ""


@dataclass
class Gateway(GatewayProcess):
    """The gateway under test and what the sampler needs to reach it."""

    data_dir: Path
    command: list[str]
    hook_dir: Path | None  # memory_hook's request directory, when loaded


@dataclass
class LoadState:
    """The closed loop's shared counters: workers claim a request until `target` is reached."""

    target: int = 0
    issued: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def done(self) -> int:
        """Requests answered, successfully or not."""
        return self.ok + sum(self.errors.values())


# --- sampling -------------------------------------------------------------------------------


def proc_sample(pid: int) -> ProcSample:
    """Read one process's memory, thread count and open fds."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            fields[key] = int(value.split()[0])  # kB for the Vm/Rss lines
    return ProcSample(
        rss_kib=fields["VmRSS"],
        hwm_kib=fields["VmHWM"],
        anon_kib=fields.get("RssAnon", 0),
        file_kib=fields.get("RssFile", 0),
        threads=fields["Threads"],
        fds=len(os.listdir(f"/proc/{pid}/fd")),
    )


def mapping_kind(start: int, size_kib: int, path: str) -> str:
    """Name what a mapping likely holds, so RSS growth points at a component."""
    if path in ("[heap]", "[stack]"):
        return "[heap] (main malloc arena)" if path == "[heap]" else path
    if path.startswith("["):
        return "[kernel: vdso, vvar, ...]"
    if path:
        return Path(path.removesuffix(" (deleted)")).name
    if start % GLIBC_HEAP_ALIGN == 0 and size_kib <= GLIBC_HEAP_ALIGN // 1024:
        return "anon: glibc thread malloc arenas"
    # CPython's 1 MiB obmalloc arenas land here too: the kernel merges adjacent anonymous
    # mappings, so their size does not single them out (--malloc-stats counts them instead).
    return "anon: other (obmalloc arenas, large mallocs, thread stacks, ...)"


def mappings_sample(pid: int) -> dict[str, int]:
    """RSS (KiB) of a process by kind of mapping, from /proc/<pid>/smaps."""
    rss: Counter[str] = Counter()
    kind = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if "-" in head[0] and not head[0].endswith(":"):  # "start-end perms offset dev inode path"
            start, end = (int(x, 16) for x in head[0].split("-"))
            kind = mapping_kind(start, (end - start) // 1024, head[5] if len(head) > 5 else "")
        elif head[0] == "Rss:":
            rss[kind] += int(head[1])
    return dict(rss)


def redis_sample(client: redis.Redis) -> tuple[ProcSample | None, int | None]:
    """The private redis-server's RSS (found by the pid it reports) and used_memory."""
    try:
        pid = int(client.info("server")["process_id"])
        used = int(client.info("memory")["used_memory"])
    except (redis.RedisError, OSError) as err:
        print(f"   redis not sampled: {err}", flush=True)
        return None, None
    return proc_sample(pid), used


def server_counters(metrics_port: int) -> dict[str, float]:
    """The gateway's request, shadow and sketch counters for the model."""
    samples = scrape(metrics_port)
    requests = "onnxgate_requests_total"
    primary = total(samples, requests, model=MODEL, role="primary")
    shadow = total(samples, requests, model=MODEL, role="shadow")
    shadow_ok = total(samples, requests, model=MODEL, role="shadow", code="OK")
    return {
        "primary": primary,
        "primary_failed": primary
        - total(samples, requests, model=MODEL, role="primary", code="OK"),
        "shadow_ok": shadow_ok,
        "shadow_failed": shadow - shadow_ok,
        "shadow_dropped": total(samples, "onnxgate_shadow_dropped_total", model=MODEL),
        "sketch_dropped": total(samples, "onnxgate_sketch_dropped_total", model=MODEL),
        "flush_failures": total(samples, "onnxgate_flush_failures_total"),
    }


def probe_hook(hook_dir: Path, name: str) -> dict[str, Any]:
    """Ask memory_hook in the gateway for malloc totals (and a snapshot when tracing)."""
    (hook_dir / f"{name}.request").write_text("")
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while time.monotonic() < deadline:
        if (error := hook_dir / f"{name}.error").exists():
            raise BenchError(f"memory hook {name} failed: {error.read_text()}")
        if (answer := hook_dir / f"{name}.json").exists():
            result: dict[str, Any] = json.loads(answer.read_text())
            return result
        time.sleep(0.1)
    raise BenchError(f"memory hook: no answer to {name} after {PROBE_TIMEOUT_S:.0f} s")


def snapshot_name(requests: int) -> str:
    """The snapshot file stem of a checkpoint."""
    return f"requests-{requests}"


def take_checkpoint(
    gateway: Gateway, registry: redis.Redis, state: LoadState, load_s: float, segment_rps: float
) -> Checkpoint:
    """Sample the quiet gateway, its redis-server and its counters."""
    gateway.check_alive()
    # /proc first, while nothing at all runs in the gateway: the scrape starts a thread there
    # and a snapshot allocates a lot.
    memory = proc_sample(gateway.proc.pid)
    mappings = mappings_sample(gateway.proc.pid)
    counters = server_counters(gateway.metrics_port)
    redis_proc, used = redis_sample(registry)
    probed: dict[str, Any] = {}
    if gateway.hook_dir is not None:
        probed = probe_hook(gateway.hook_dir, snapshot_name(state.done))
    return Checkpoint(
        requests=state.done,
        errors=dict(sorted(state.errors.items())),
        load_s=round(load_s, 3),
        segment_rps=round(segment_rps, 1),
        gateway=memory,
        server=counters,
        redis=redis_proc,
        redis_used_memory=used,
        mappings=mappings,
        malloc=probed.get("mallinfo2"),
        pymalloc=probed.get("pymalloc"),
        traced_bytes=probed.get("traced_bytes"),
        at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def describe(c: Checkpoint, base: Checkpoint | None) -> str:
    """One progress line."""
    delta = "" if base is None else f" ({mib(c.gateway.rss_kib - base.gateway.rss_kib):+.2f})"
    text = (
        f"   {c.requests:>10,d} requests: RSS {mib(c.gateway.rss_kib):7.1f} MiB{delta}"
        f"  HWM {mib(c.gateway.hwm_kib):.1f}  threads {c.gateway.threads}  fds {c.gateway.fds}"
        f"  | {c.segment_rps:,.0f} req/s, errors {sum(c.errors.values())}"
    )
    if c.redis is not None and c.redis_used_memory is not None:
        text += f"  | redis RSS {mib(c.redis.rss_kib):.1f} MiB used {c.redis_used_memory / MIB:.1f}"
    if c.malloc:
        used, free = malloc_used(c.malloc) / MIB, c.malloc["fordblks"] / MIB
        text += f"  | malloc in use {used:.1f} MiB free {free:.1f}"
    if c.pymalloc and "arenas_current" in c.pymalloc:  # not reported while tracemalloc runs
        arenas, live = c.pymalloc["arenas_current"], c.pymalloc["allocated_bytes"] / MIB
        text += f"  | obmalloc {arenas} arenas, live {live:.1f} MiB"
    if c.traced_bytes is not None:
        text += f"  | traced {c.traced_bytes / MIB:.1f} MiB"
    return text


def malloc_used(info: dict[str, int]) -> int:
    """Bytes malloc has handed out and not got back: in arenas plus mmap'd chunks."""
    return info["uordblks"] + info["hblkhd"]


def mib(kib: int) -> float:
    """KiB to MiB."""
    return kib / 1024


# --- client ---------------------------------------------------------------------------------


def prepare_client_process() -> dict[str, Any]:
    """Check the CPUs, note the run's environment, pin this process to the client's CPU and
    turn SIGTERM into an interruption; returns the environment, read before pinning (which
    would make nproc 1). Call it before grpc starts its threads: they inherit the pinning."""
    check_cpus()
    env = run_environment()
    pin_process(int(CLIENT_CPU))
    signal.signal(signal.SIGTERM, on_sigterm)
    return env


def pin_process(cpu: int) -> None:
    """Pin every thread of this process (numpy's pools included) to one CPU; threads created
    later inherit it from their creator."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), {cpu})


async def closed_loop_client(
    channel: grpc.aio.Channel, seed: int
) -> tuple[RawCall, bytes, LoadState]:
    """What the closed loop needs on `channel`: the raw ModelInfer call, the request it sends
    (serialised once) and fresh counters."""
    payload = await request_payload(channel, seed)
    call: RawCall = channel.unary_unary(
        MODEL_INFER, request_serializer=None, response_deserializer=None
    )
    return call, payload, LoadState()


async def request_payload(channel: grpc.aio.Channel, seed: int) -> bytes:
    """One batch-1 request for the model, serialised once from its metadata."""
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=10.0)
    specs = specs_from_metadata(meta, 1)
    request = build_request(MODEL, "", specs, np.random.default_rng(seed))
    return request.SerializeToString()


async def worker(call: RawCall, payload: bytes, state: LoadState, timeout_s: float) -> None:
    """Send back to back until the target is claimed; the count stops exactly there."""
    while state.issued < state.target:
        state.issued += 1
        try:
            await call(payload, timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            state.errors[err.code().name] += 1
        else:
            state.ok += 1


async def progress(state: LoadState, started: float) -> None:
    """Print the count now and then: a segment of the full run takes minutes."""
    done_before = state.done
    while True:
        await asyncio.sleep(PROGRESS_S)
        rate = (state.done - done_before) / (time.perf_counter() - started)
        print(f"   ... {state.done:,d} answered ({rate:,.0f} req/s)", flush=True)


async def run_to(
    call: RawCall,
    payload: bytes,
    state: LoadState,
    target: int,
    args: argparse.Namespace,
    ticking: bool = True,
) -> float:
    """Run the closed loop until `target` requests are answered; return the seconds taken.
    With `ticking`, print the count every PROGRESS_S meanwhile."""
    state.target = target
    started = time.perf_counter()
    ticker = asyncio.create_task(progress(state, started)) if ticking else None
    try:
        workers = (worker(call, payload, state, args.timeout) for _ in range(args.concurrency))
        await asyncio.gather(*workers)
    finally:
        if ticker is not None:
            ticker.cancel()
    return time.perf_counter() - started


async def drive(
    args: argparse.Namespace, gateway: Gateway, sample: Callable[[LoadState, float, float], None]
) -> None:
    """Load up to each checkpoint in turn, let the gateway settle, then sample it."""
    target = f"{HOST}:{gateway.port}"
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        call, payload, state = await closed_loop_client(channel, args.seed)
        load_s = 0.0
        for checkpoint in args.checkpoints:
            gateway.check_alive()
            before = state.done
            ok_before = state.ok
            seconds = await run_to(call, payload, state, checkpoint, args)
            load_s += seconds
            if state.ok == ok_before:  # a broken setup: no memory figure would mean anything
                raise BenchError(f"every request failed up to {checkpoint:,}: {state.errors}")
            # Quiet: no request in flight, the drift buffer folded (every second).
            await asyncio.sleep(args.settle_s)
            sample(state, load_s, (state.done - before) / seconds)


# --- gateway and registry -------------------------------------------------------------------


def start_gateway(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> Gateway:
    """Start `onnxgate serve` (private registry in the run's directory) pinned to CPU 0."""
    repo = work / "repo"
    port, metrics_port = port_pair()
    cmd = server_command("gateway", args, repo, port, metrics_port)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    hook_dir = None
    if args.tracemalloc or args.malloc_stats:
        hook_dir = load_memory_hook(env, work, args.tracemalloc)
    log = work / "gateway.log"
    proc = start_server(stack, "gateway", cmd, log, port, MODEL, args.ready_timeout, env)
    # server_command puts the gateway's --data-dir next to the repository.
    return Gateway(port, metrics_port, proc, log, work / "gateway-data", cmd, hook_dir)


def load_memory_hook(env: dict[str, str], work: Path, frames: int) -> Path:
    """Load memory_hook into the gateway via sitecustomize (its command stays the same)."""
    site = work / "memory-hook-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(sitecustomize_source())
    hook_dir = work / "memory-hook"
    hook_dir.mkdir()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    env[HOOK_DIR_ENV] = str(hook_dir)
    env[TRACE_FRAMES_ENV] = str(frames)
    return hook_dir


def gatectl(args: argparse.Namespace, gateway: Gateway, work: Path, *words: str) -> str:
    """Run one gatectl command against the gateway's private registry."""
    cmd = [str(args.gatectl), "--data-dir", str(gateway.data_dir), "--actor", ACTOR, *words]
    print(f"== {shlex.join(cmd)}", flush=True)
    return run_bounded(f"gatectl {words[0]}", cmd, 60.0, dict(os.environ), work)


def enable_canary_and_shadow(args: argparse.Namespace, gateway: Gateway, work: Path) -> str:
    """Register versions 2 and 3 (the tiny model's bytes again), route 90/10 over 1 and 2 and
    mirror to 3 (a rule may not split and shadow the same version); wait until served."""
    model_file = work / "repo" / MODEL / "1" / "model.onnx"
    for version in ("2", "3"):
        gatectl(args, gateway, work, "register", MODEL, version, str(model_file))
    rule = ["--split", "1=90,2=10", "--shadow", f"3={args.shadow_percent:g}"]
    reason = ["--reason", "memory growth: canary split + shadow"]
    out = gatectl(args, gateway, work, "--json", "route", "set", MODEL, *rule, *reason)
    revision = int(json.loads(out)["revision"])
    wait_route(gateway, revision, args.apply_timeout)
    return " ".join(rule)


def wait_route(gateway: Gateway, revision: int, timeout_s: float) -> None:
    """Poll the gateway's route revision gauge until it serves `revision`."""
    served, serving = wait_serving(
        gateway.metrics_port, MODEL, revision, timeout_s, ROUTE_POLL_S, gateway.check_alive
    )
    if served is None:
        raise BenchError(f"rule revision {revision} not served after {timeout_s:.0f} s ({serving})")


# --- results --------------------------------------------------------------------------------


def verdict(rows: list[Checkpoint], baseline: int) -> dict[str, Any]:
    """RSS growth from the baseline checkpoint to the last one, against the target."""
    base = next(r for r in rows if r.requests == baseline)
    last = rows[-1]
    grown = (last.gateway.rss_kib - base.gateway.rss_kib) * 1024
    span = last.requests - base.requests
    errors = sum(last.errors.values())
    return {
        "baseline_requests": base.requests,
        "last_requests": last.requests,
        "rss_growth_bytes": grown,
        "rss_growth_mib": round(grown / MIB, 3),
        "bytes_per_request": round(grown / span, 3) if span else None,
        "target_bytes": int(TARGET_MB * MB),
        "met": grown < TARGET_MB * MB,
        "errors": errors,
        "count_mismatch": last.server["primary"] != last.requests,
        "passed": grown < TARGET_MB * MB and errors == 0,
    }


def trace_growth(hook_dir: Path, baseline: int, last: int) -> dict[str, list[str]]:
    """The Python allocations that grew most from the baseline snapshot to the last, by line
    and by file (a file names the component)."""
    filters = [tracemalloc.Filter(False, pattern) for pattern in TRACE_IGNORE]
    old = tracemalloc.Snapshot.load(str(hook_dir / f"{snapshot_name(baseline)}.snapshot"))
    new = tracemalloc.Snapshot.load(str(hook_dir / f"{snapshot_name(last)}.snapshot"))
    old, new = old.filter_traces(filters), new.filter_traces(filters)
    growth = {
        key: [str(stat) for stat in new.compare_to(old, key)[:TRACE_TOP]]
        for key in ("filename", "lineno")
    }
    if new.traceback_limit > 1:  # whole stacks say which caller of a hot line keeps memory
        growth["traceback"] = [
            "\n".join(
                [
                    f"{stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+d} blocks:",
                    *stat.traceback.format(most_recent_first=True),
                ]
            )
            for stat in new.compare_to(old, "traceback")[: TRACE_TOP // 3]
        ]
    return growth


def optional_cells(r: Checkpoint, malloc: bool, traced: bool) -> dict[str, str]:
    """Columns only the memory hook fills (malloc totals, the traced Python heap), by name."""
    cells: dict[str, str] = {}
    if malloc:
        cells["malloc in use MiB"] = fmt(malloc_used(r.malloc) / MIB if r.malloc else None, ".2f")
        cells["malloc free MiB"] = fmt(r.malloc["fordblks"] / MIB if r.malloc else None, ".2f")
        py = r.pymalloc or {}
        cells["obmalloc arenas (1 MiB)"] = fmt(py.get("arenas_current"), "d")
        live = py.get("allocated_bytes")
        cells["obmalloc live MiB"] = fmt(None if live is None else live / MIB, ".2f")
    if traced:
        cells["traced MiB"] = fmt(None if r.traced_bytes is None else r.traced_bytes / MIB, ".2f")
    return cells


def report_table(rows: list[Checkpoint], baseline: int) -> list[str]:
    """The checkpoint table, deltas from the baseline checkpoint (the first when an
    interrupted run did not reach it)."""
    base = next((r for r in rows if r.requests == baseline), rows[0])
    malloc = any(r.malloc for r in rows)
    traced = any(r.traced_bytes is not None for r in rows)
    head = f"| requests | RSS MiB | delta from {base.requests:,d} MiB | HWM MiB | anon MiB"
    head += " | threads | fds"
    head += " | redis RSS MiB | redis used_memory MiB | req/s since previous | errors |"
    head += "".join(f" {name} |" for name in optional_cells(base, malloc, traced))
    lines = [head, "|" + " ---: |" * (head.count("|") - 1)]
    for r in rows:
        redis_used = None if r.redis_used_memory is None else r.redis_used_memory / MIB
        line = (
            f"| {r.requests:,d} | {mib(r.gateway.rss_kib):.1f}"
            f" | {mib(r.gateway.rss_kib - base.gateway.rss_kib):+.2f}"
            f" | {mib(r.gateway.hwm_kib):.1f} | {mib(r.gateway.anon_kib):.1f}"
            f" | {r.gateway.threads} | {r.gateway.fds}"
            f" | {fmt(None if r.redis is None else mib(r.redis.rss_kib), '.1f')}"
            f" | {fmt(redis_used, '.2f')} | {r.segment_rps:,.0f} | {sum(r.errors.values())} |"
        )
        lines.append(line + "".join(f" {c} |" for c in optional_cells(r, malloc, traced).values()))
    return lines


def headline(v: dict[str, Any]) -> str:
    """The one line the requirement is about."""
    state = "PASS" if v["met"] else "FAIL"
    text = (
        f"RSS({v['last_requests']:,d}) - RSS({v['baseline_requests']:,d})"
        f" = {v['rss_growth_mib']:.2f} MiB ({v['rss_growth_bytes'] / MB:.2f} MB;"
        f" target < {TARGET_MB:g} MB = {v['target_bytes'] / MIB:.2f} MiB): {state}"
    )
    if v["bytes_per_request"] is not None:
        text += f"; {v['bytes_per_request']:.1f} bytes per request"
    return text


def report(
    args: argparse.Namespace, env: dict[str, Any], rows: list[Checkpoint], extra: dict[str, Any]
) -> str:
    """Render the Markdown report."""
    lines = [
        f"# Memory growth: {MODEL} model, batch 1, closed loop, concurrency {args.concurrency}",
        "",
        f"Command: `{env['command']}`",
        "",
        f"Gateway (CPU {SERVER_CPU}): `{extra['gateway_command']}`"
        + (f"; rule `{extra['rule']}`" if extra.get("rule") else "; default rule (1=100)"),
        "",
        f"Machine: {env['date']}, {env['cpu']}, nproc {env['nproc']}, Python {env['python']},"
        f" {env['libc']}, grpcio {env['grpcio']}, protobuf {env['protobuf']}, onnxruntime"
        f" {env['onnxruntime']}, numpy {env['numpy']}, {env['redis_server']}; git"
        f" {env['git']}. Client in this"
        f" process on CPU {CLIENT_CPU}. Each checkpoint: the load stops with exactly that many"
        f" requests answered, the gateway idles {args.settle_s:g} s, then /proc is read."
        f" Load average at start {env['loadavg_start']}, at end {env.get('loadavg_end')}.",
        "",
    ]
    v = extra.get("verdict")
    if v is not None:
        lines += [f"**{headline(v)}**", ""]
    lines += report_table(rows, extra["baseline"]) if rows else ["(no checkpoint reached)"]
    if any(r.malloc for r in rows):
        lines += ["", *HOOK_LEGEND]
    lines += ["", *summary_lines(rows)]
    if "verdict" in extra:
        lines += ["", *mapping_lines(rows, extra["baseline"])]
    if extra.get("tracemalloc"):
        lines += ["", *trace_lines(extra["tracemalloc"])]
    lines += failures_section(extra["failures"])
    return "\n".join(lines)


def summary_lines(rows: list[Checkpoint]) -> list[str]:
    """Rate, errors and the gateway's own counters at the end."""
    if not rows:
        return []
    last = rows[-1]
    s = last.server
    return [
        f"Requests: {last.requests:,d} in {last.load_s:.1f} s of load ="
        f" {last.requests / last.load_s:,.0f} req/s; client errors {last.errors or 'none'}.",
        f"Gateway counters: primary {s['primary']:,.0f} (failed {s['primary_failed']:,.0f}),"
        f" shadow run {s['shadow_ok']:,.0f} (failed {s['shadow_failed']:,.0f}), shadow dropped"
        f" {s['shadow_dropped']:,.0f}, drift rows dropped {s['sketch_dropped']:,.0f},"
        f" flush failures {s['flush_failures']:,.0f}."
        + (
            " **Primary count differs from the client's.**" if s["primary"] != last.requests else ""
        ),
    ]


def mapping_lines(rows: list[Checkpoint], baseline: int) -> list[str]:
    """Where the gateway's RSS changed from the baseline checkpoint to the last, by mapping."""
    base, last = next(r for r in rows if r.requests == baseline), rows[-1]
    kinds = set(base.mappings) | set(last.mappings)
    change = {k: last.mappings.get(k, 0) - base.mappings.get(k, 0) for k in kinds}
    moved = [k for k in kinds if change[k]]
    ranked = sorted(moved, key=lambda k: (-abs(change[k]), k))[:SMAPS_TOP]
    lines = [
        f"Gateway RSS by mapping (/proc/PID/smaps), {base.requests:,d} -> {last.requests:,d}"
        " requests, largest changes first (unchanged mappings left out):",
        "",
        "| mapping | RSS MiB at baseline | at last | change MiB |",
        "| --- | ---: | ---: | ---: |",
    ]
    for k in ranked:
        before, after = base.mappings.get(k, 0), last.mappings.get(k, 0)
        lines.append(f"| {k} | {mib(before):.2f} | {mib(after):.2f} | {mib(change[k]):+.2f} |")
    return lines


def trace_lines(trace: dict[str, list[str]]) -> list[str]:
    """The tracemalloc comparison (tracing itself slows the gateway and adds RSS)."""
    lines = [
        "## Python allocations that grew (tracemalloc, baseline -> last checkpoint)",
        "",
        "Tracing slows the gateway several-fold and adds its own RSS: judge growth by the"
        " traced sizes here, not by this run's RSS or rate.",
        "",
    ]
    for key, stats in trace.items():
        lines += [f"By {key}:", "", "```", *stats, "```", ""]
    return lines


def run_environment() -> dict[str, Any]:
    """driver's environment plus what matters to memory."""
    env = environment() | run_identity()
    env["libc"] = " ".join(platform.libc_ver())
    env["malloc_env"] = {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC"))}
    try:
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        env["redis_server"] = version.stdout.split(" sha=")[0].strip()
    except OSError as err:
        env["redis_server"] = f"redis-server: {err}"
    env["git"] = git_state()
    return env


def git_state() -> str:
    """The commit measured, and whether the gateway's code differed from it: the gateway runs
    from this working tree, so uncommitted edits are part of the measurement."""

    def git(*words: str) -> str:
        done = subprocess.run(["git", *words], capture_output=True, text=True, cwd=ROOT)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD") or "unknown"
        dirty = git("status", "--porcelain", "--", "gateway", "registry_client")
    except OSError:
        return "unknown (no git)"
    return f"{commit}, gateway code modified" if dirty else f"{commit}, gateway code clean"


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--checkpoints",
        type=csv_list(int),
        default=CHECKPOINTS,
        help="request counts to sample at; the first is the warm-up",
    )
    p.add_argument(
        "--baseline",
        type=int,
        help=f"the checkpoint deltas are taken from (default {BASELINE:,} if listed before"
        " the last, else the second checkpoint, or the first of two)",
    )
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request deadline (s)")
    p.add_argument("--settle-s", type=float, default=2.0, help="idle before each sample")
    p.add_argument(
        "--with-shadow",
        action="store_true",
        help="register versions 2 and 3, route 1=90,2=10 and shadow 3",
    )
    p.add_argument(
        "--shadow-percent",
        type=float,
        default=100.0,
        help="of primary requests mirrored; under this saturating load the gateway's CPU guard"
        " drops most copies (--gateway-args '--shadow-max-cpu-busy 1' runs them all)",
    )
    p.add_argument(
        "--malloc-stats",
        action="store_true",
        help="load a probe into the gateway: glibc malloc in use vs free, CPython obmalloc"
        " arenas vs live bytes, at each checkpoint",
    )
    p.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace the gateway's Python allocations (slow), compare snapshots",
    )
    p.add_argument("--gateway-args", default="", help="extra flags for onnxgate serve")
    p.add_argument("--onnxgate", type=Path, default=ROOT / ".venv" / "bin" / "onnxgate")
    p.add_argument("--gatectl", type=Path, default=ROOT / ".venv" / "bin" / "gatectl")
    p.add_argument("--ready-timeout", type=float, default=60.0)
    p.add_argument("--apply-timeout", type=float, default=60.0, help="rule served within (s)")
    p.add_argument("--seed", type=int, default=0, help="of the request's random input")
    p.add_argument("--out", type=Path, default=HERE / "out" / "memory_growth.md")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    points = args.checkpoints
    if len(points) < 2 or any(b <= a for a, b in pairwise(points)):
        p.error("--checkpoints: at least two, strictly increasing")
    if args.baseline is None:
        # The first checkpoint is the warm-up: the second, unless there are only two.
        fallback = points[min(1, len(points) - 2)]
        args.baseline = BASELINE if BASELINE in points[:-1] else fallback
    if args.baseline not in points or args.baseline == points[-1]:
        p.error("--baseline must be one of --checkpoints, before the last")
    if args.concurrency < 1 or points[0] < args.concurrency:
        p.error("--concurrency must be >= 1 and at most the first checkpoint")
    if "--workers" in shlex.split(args.gateway_args):
        p.error("--workers: the sampler reads one gateway process, not a supervisor's workers")
    args.model = MODEL  # servers.server_command reads it
    return args


def measure(
    args: argparse.Namespace, work: Path, rows: list[Checkpoint], extra: dict[str, Any]
) -> None:
    """Start the gateway, optionally the canary and shadow, then load and sample to the end."""
    build_repository(work / "repo", [MODEL])
    with contextlib.ExitStack() as stack:
        gateway = start_gateway(args, work, stack)
        extra["gateway_command"] = shlex.join(gateway.command)
        if args.with_shadow:
            extra["rule"] = enable_canary_and_shadow(args, gateway, work)
        registry = redis.Redis.from_url(private_redis_url(gateway.data_dir))
        stack.callback(registry.close)

        def sample(state: LoadState, load_s: float, rate: float) -> None:
            rows.append(take_checkpoint(gateway, registry, state, load_s, rate))
            base = next((r for r in rows if r.requests == args.baseline), None)
            print(describe(rows[-1], base), flush=True)

        print(f"== load: concurrency {args.concurrency}, checkpoints {args.checkpoints}")
        asyncio.run(drive(args, gateway, sample))
        if gateway.hook_dir is not None and args.tracemalloc:
            extra["tracemalloc"] = trace_growth(gateway.hook_dir, args.baseline, rows[-1].requests)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = parse_args(argv)
    env = prepare_client_process()
    rows: list[Checkpoint] = []
    extra: dict[str, Any] = {"baseline": args.baseline, "failures": [], "gateway_command": "-"}
    # An interrupted run's gateway is already stopped (measure's ExitStack): what was sampled
    # is reported.
    run_in_work_dir(
        "onnxgate-memory-growth-", args.keep_work, lambda work: measure(args, work, rows, extra),
        extra["failures"], (BenchError, grpc.RpcError), lambda: f"after {len(rows)} checkpoints",
    )  # fmt: skip
    reached = bool(rows) and rows[-1].requests == args.checkpoints[-1]
    judge(env, extra, reached, lambda: verdict(rows, args.baseline),
          "the run ended before the last checkpoint")  # fmt: skip
    text = report(args, env, rows, extra)
    return finish_judged(args, env, text, extra, checkpoints=[asdict(r) for r in rows])


if __name__ == "__main__":
    sys.exit(main())
