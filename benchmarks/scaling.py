"""Scaling: `onnxgate serve --workers auto` (2 workers on a 2-CPU machine) against
`--workers 1`, and ModelStreamInfer against ModelInfer, with the server CPU time each request
costs.

A. workers: two gateways, `--workers 1` and `--workers auto`, nothing pinned: gateway and client
   share the machine's cores, as the measurement asks for ("with the client on the same two cores").
   load.py runs a closed loop at concurrency 32 over 8 channels (each its own connection, since
   the kernel gives each connection to one worker), perf_analyzer at concurrency 32 (it opens
   about one connection per 6 requests in flight); the established connections each worker
   holds are recorded in every run.
B. streaming: one gateway, 1 worker pinned to the server CPU, `--max-streams 64` (each
   ModelStreamInfer stream gets a thread of its own, up to that many at once; one more is
   refused with RESOURCE_EXHAUSTED), the client pinned to the client CPU. Unary ModelInfer
   against ModelStreamInfer (one stream per request in flight) at concurrency 1, 8 and 32, with
   perf_analyzer (`--streaming`) and load.py (`--streaming`). load.py counts the streams that
   got no answer in its window: there should be none, and any is reported as a failure.

Every measurement also reads the CPU time (utime + stime, /proc/<pid>/stat) of every process of
the gateway (workers, supervisor, its private redis-server) and of the client. load.py reads them
at the edges of its measured window and divides by the requests it sent in it; perf_analyzer has
no window this driver can see, so its run is taken whole (start-up and every trial window) and
divided by the gateway's own request counter over the same span. From the server CPU per request
comes "req/s per core" = 1e6 / (CPU us per request), and the estimate for a machine with M cores
given to the gateway, M times that. The gateways are started once; within each round they are
measured back to back, the order alternating per round, and ratios are taken within a round.

A round is 16 measurements (A: 2 tools x 2 gateways; B: 3 concurrencies x 2 tools x 2 modes):
load.py 6 s after 1 s of warm-up (about 8 s with its start-up), perf_analyzer 3 or 4 windows of
3 s (10 to 14 s; one that misses its stability band is rerun once). The full measurement takes
about 9 minutes on a 2-CPU machine, and at most about 15 if every perf_analyzer run needed all
its windows and a rerun:

    .venv/bin/python benchmarks/scaling.py --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench_report import display_command, failures_section, fmt, ratio_cell, scrape, total
from driver import (
    alternate,
    csv_list,
    finish,
    load_average,
    perf_analyzer_version,
    run_rounds,
    start_run,
)
from load import proc_cpu_seconds, proc_stat
from load_tools import (
    UNSTABLE,
    Run,
    add_perf_analyzer_args,
    parse_pa_csv,
    perf_analyzer_command,
    perf_analyzer_env,
    perf_analyzer_timeout,
)
from models import build_repository
from round_stats import median_of, medians_of
from servers import (
    CLIENT_CPU,
    HOST,
    SERVER_CPU,
    BenchError,
    check_alive,
    launch,
    port_pair,
    run_bounded,
    server_command,
    tail,
    wait_ready,
)

from gateway.process.cgroups import available_cpus

HERE = Path(__file__).resolve().parent
PARTS = ("workers", "streaming")
MODES = ("unary", "streaming")
REQUESTS_METRIC = "onnxgate_requests_total"
# Connections are opened at the start of a run and kept: a few looks (1, 2, 4, 8 s in) find
# them all, and each `ss` run is a child whose CPU would count as perf_analyzer's otherwise.
FIRST_LOOK_S = 1.0
LAST_LOOK_GAP_S = 8.0
WORKERS_WAIT_S = 60.0


@dataclass
class Gateway:
    """One gateway under test, started once for the whole run."""

    name: str
    workers: int
    pinned: bool  # part B: the gateway on the server CPU, the client on the client CPU
    flags: list[str]  # what sets it apart, for the report
    port: int
    metrics_port: int
    command: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def label(self) -> str:
        """How the report names it."""
        where = f"pinned to CPU {SERVER_CPU}" if self.pinned else "not pinned"
        return f"{shlex.join(self.flags)}, {where}"


@dataclass
class Sample(Run):
    """A load_tools Run (one tool at one concurrency against one gateway), plus the part,
    unary or streaming, and the CPU time it cost."""

    part: str = "workers"
    mode: str = "unary"
    requests: int | None = None  # what the CPU times are divided by
    server_cpu_s: dict[str, float] = field(default_factory=dict)  # by process label
    client_cpu_s: float | None = None
    connections: dict[str, int] = field(default_factory=dict)  # established, per worker
    stalled: int = 0  # load.py --streaming: streams that got no answer in the window

    def us_per_request(self, seconds: float | None) -> float | None:
        """CPU microseconds per request, or None without a count."""
        if seconds is None or not self.requests:
            return None
        return seconds / self.requests * 1e6

    @property
    def server_us(self) -> float | None:
        """Server CPU per request, every process of the gateway."""
        return self.us_per_request(sum(self.server_cpu_s.values()) if self.server_cpu_s else None)

    @property
    def client_us(self) -> float | None:
        """Client CPU per request."""
        return self.us_per_request(self.client_cpu_s)


# --- gateways ---------------------------------------------------------------------------------


def make_gateways(args: argparse.Namespace, repo: Path, work: Path) -> dict[str, Gateway]:
    """The gateways the chosen parts need, each with its own repository copy and ports.

    server_command puts a gateway's private registry next to its repository: two gateways
    must not share one."""
    specs: list[tuple[str, bool, list[str], int]] = []
    if "workers" in args.parts:
        # "w2" is `--workers auto`: one worker per CPU, 2 on the machine this was written for.
        specs += [("w1", False, ["--workers", "1"], 1),
                  ("w2", False, ["--workers", "auto"], available_cpus())]  # fmt: skip
    if "streaming" in args.parts:
        specs.append(("pinned", True, ["--workers", "1", "--max-streams", str(args.max_streams)],
                      1))  # fmt: skip
    gws: dict[str, Gateway] = {}
    taken: set[int] = set()
    for name, pinned, flags, workers in specs:
        own = work / name / "repo"
        shutil.copytree(repo, own)
        port, metrics_port = port_pair(taken)
        # JSON logs: the supervisor's "worker started" lines name the worker pids.
        cmd = server_command("gateway", args, own, port, metrics_port)
        cmd += [*flags, "--log-format", "json"]
        log = work / f"{name}.log"
        gws[name] = Gateway(name, workers, pinned, flags, port, metrics_port, cmd, log)
    return gws


def start_gateways(
    args: argparse.Namespace, gws: dict[str, Gateway], stack: contextlib.ExitStack
) -> None:
    """Start every gateway in its own session (pinned or not), stopped when `stack` closes, and
    wait until every worker of each serves."""
    for gw in gws.values():
        cpu = SERVER_CPU if gw.pinned else None
        gw.proc = launch(stack, f"{gw.name} ({gw.label})", gw.command, gw.log, cpu=cpu)
        wait_ready(gw.port, args.model, gw.proc, args.ready_timeout, gw.log)
        if gw.workers > 1:
            wait_workers(gw, args.model)


def wait_workers(gw: Gateway, model: str) -> None:
    """Wait until the supervisor reports every worker alive with the model loaded.

    ServerReady answered by one worker says nothing of the others."""
    deadline = time.monotonic() + WORKERS_WAIT_S
    while time.monotonic() < deadline:
        samples = scrape(gw.metrics_port)
        alive = total(samples, "onnxgate_workers_alive")
        # model_loaded is the minimum over live workers: 1 once all have the model.
        loaded = total(samples, "onnxgate_model_loaded", model=model)
        if alive == gw.workers and loaded >= 1 and len(worker_pids(gw)) == gw.workers:
            return
        time.sleep(0.2)
    raise BenchError(f"{gw.name}: not every worker came up: {tail(gw.log.read_bytes())}")


def worker_pids(gw: Gateway) -> dict[int, int]:
    """pid -> worker index; the supervisor logs each start (the latest per index counts)."""
    assert gw.proc is not None
    if gw.workers == 1:
        return {gw.proc.pid: 0}  # no supervisor: the process itself serves
    latest: dict[int, int] = {}
    for line in gw.log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("message") == "worker started":
                latest[int(entry["worker"])] = int(entry["pid"])
    return {pid: index for index, pid in latest.items()}


def processes(gw: Gateway) -> dict[int, str]:
    """pid -> label of every process of the gateway's session (started with its own)."""
    assert gw.proc is not None
    workers = worker_pids(gw)
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        stat = proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is None or int(stat[1][3]) != gw.proc.pid:
            continue
        pid = int(entry.name)
        if pid in workers:
            found[pid] = f"worker {workers[pid]}"
        else:
            found[pid] = "supervisor" if pid == gw.proc.pid else stat[0]
    return found


def by_label(seconds: dict[int, float | None], labels: dict[int, str]) -> dict[str, float]:
    """CPU seconds summed per process label; a process that went away counts as missing."""
    out: dict[str, float] = {}
    for pid, value in seconds.items():
        if value is not None:
            out[labels[pid]] = round(out.get(labels[pid], 0.0) + value, 3)
    return out


class ConnectionLooks:
    """Established connections on the gateway's port per worker, the most seen while a tool
    runs; a background thread looks with `ss` at 1, 2, 4, 8, 16 ... s."""

    def __init__(self, port: int, procs: dict[int, str]) -> None:
        self.port = port
        self.workers = {p: label for p, label in procs.items() if label.startswith("worker")}
        self.most: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionLooks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        gap = FIRST_LOOK_S
        while not self._stop.wait(gap):
            self.look()
            gap = min(2 * gap, LAST_LOOK_GAP_S)

    def look(self) -> None:
        """One look: count the server side of every established connection by owner pid."""
        filt = f"( sport = :{self.port} )"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["ss", "-tnpH", "state", "established", filt],
                capture_output=True, text=True, timeout=5, check=False,
            ).stdout  # fmt: skip
            counts: dict[str, int] = {}
            for pid in re.findall(r"pid=(\d+)", out):
                if (label := self.workers.get(int(pid))) is not None:
                    counts[label] = counts.get(label, 0) + 1
            for label, count in counts.items():
                self.most[label] = max(self.most.get(label, 0), count)


# --- measurements -----------------------------------------------------------------------------


def client_prefix(gw: Gateway) -> list[str]:
    """taskset onto the client CPU when the gateway is pinned, or nothing."""
    return ["taskset", "-c", CLIENT_CPU] if gw.pinned else []


def run_load(args: argparse.Namespace, gw: Gateway, sample: Sample, work: Path) -> None:
    """load.py closed loop; CPU times from its measured window (it reads /proc itself)."""
    procs = processes(gw)
    out_json = work / "load.json"
    out_json.unlink(missing_ok=True)
    cmd = [*client_prefix(gw), args.python, str(HERE / "load.py"), "--model", args.model]
    cmd += ["--target", f"{HOST}:{gw.port}", "--concurrency", str(sample.concurrency)]
    cmd += ["--channels", str(1 if gw.pinned else args.channels)]
    cmd += ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    cmd += ["--json-out", str(out_json), "--cpu-pids", ",".join(str(p) for p in procs)]
    cmd += ["--streaming"] if sample.mode == "streaming" else []
    with ConnectionLooks(gw.port, procs) as looks:
        run_bounded("load.py", cmd, args.warmup + args.duration + 60, dict(os.environ), work)
    result = json.loads(out_json.read_text())
    lat, cpu, errors = result["latency_ms"], result["cpu_s"], result["errors"]
    sample.rps, sample.p50_ms, sample.p99_ms = result["rps"], lat["p50"], lat["p99"]
    sample.requests = result["requests"] + sum(errors.values())
    sample.client_cpu_s = cpu["client"]
    sample.server_cpu_s = by_label({p: cpu[str(p)] for p in procs}, procs)
    sample.connections = looks.most
    sample.stalled = result["stalled_streams"]
    problems = [f"errors {errors}"] if errors else []
    if sample.stalled:
        problems.append(f"STALLED: {sample.stalled} of {sample.concurrency} streams unanswered")
    sample.error = "; ".join(problems) or None


@dataclass
class Marks:
    """CPU seconds and the gateway's request count at one moment, around a perf_analyzer run."""

    server: dict[int, float | None]
    client: float
    requests: float

    @classmethod
    def take(cls, gw: Gateway, procs: dict[int, str], model: str) -> Marks:
        """Read them now."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            {pid: proc_cpu_seconds(pid) for pid in procs},
            children.ru_utime + children.ru_stime,  # finished children: perf_analyzer once reaped
            total(scrape(gw.metrics_port), REQUESTS_METRIC, model=model),
        )

    def since(self, before: Marks, procs: dict[int, str], sample: Sample) -> None:
        """Record in `sample` what was spent from `before` to these marks."""
        spent = {
            pid: None if (b := before.server[pid]) is None or (a := self.server[pid]) is None
            else a - b
            for pid in procs
        }  # fmt: skip
        sample.server_cpu_s = by_label(spent, procs)
        sample.client_cpu_s = round(self.client - before.client, 3)
        sample.requests = round(self.requests - before.requests)


def run_pa(args: argparse.Namespace, gw: Gateway, sample: Sample, work: Path) -> None:
    """perf_analyzer; CPU times and the gateway's request count over its whole run."""
    procs = processes(gw)
    (work / "pa.csv").unlink(missing_ok=True)
    streaming = sample.mode == "streaming"
    cmd = perf_analyzer_command(args, gw.port, sample.concurrency, "pa.csv", client_prefix(gw),
                                streaming)  # fmt: skip
    env = perf_analyzer_env(args)
    timeout = perf_analyzer_timeout(args)
    before = Marks.take(gw, procs, args.model)
    with ConnectionLooks(gw.port, procs) as looks:
        run_bounded("perf_analyzer", cmd, timeout, env, work)
    Marks.take(gw, procs, args.model).since(before, procs, sample)
    sample.rps, sample.p50_ms, sample.p99_ms = parse_pa_csv(work / "pa.csv")
    sample.connections = looks.most


def measure(args: argparse.Namespace, gw: Gateway, sample: Sample, work: Path) -> Sample:
    """Run one sample; a failure is recorded in it, the run goes on. A perf_analyzer run that
    misses its stability band (a noisy shared machine) is rerun, --pa-retries times at most."""
    assert gw.proc is not None
    tool = run_load if sample.tool == "load.py" else run_pa
    for reruns_left in range(args.pa_retries, -1, -1):
        sample.error = None
        try:
            check_alive(gw.proc, gw.log)
            tool(args, gw, sample, work)
            break
        except BenchError as err:
            sample.error, sample.rps = str(err), None
            if UNSTABLE not in sample.error or not reruns_left:
                break
            print(f"   {describe(sample)} -- unstable, rerun", flush=True)
    return sample


def describe(s: Sample) -> str:
    """One progress line."""
    head = f"{s.server:7s} {s.tool:13s} {s.mode:9s} c={s.concurrency:<3d} #{s.repeat + 1}"
    if s.rps is None:
        return f"{head} FAILED: {s.error}"
    conns = ", ".join(f"{k} {v}" for k, v in sorted(s.connections.items()))
    text = (
        f"{head} {s.rps:8.1f} req/s  p50 {fmt(s.p50_ms, '.3f')}  p99 {fmt(s.p99_ms, '.3f')} ms  "
        f"server {fmt(s.server_us, '.0f')} us/req  client {fmt(s.client_us, '.0f')} us/req  "
        f"connections: {conns or '-'}"
    )
    return f"{text}  ({s.error})" if s.error else text


def tools(args: argparse.Namespace) -> list[str]:
    """The load tools of this run."""
    return ["load.py"] if args.no_perf_analyzer else ["load.py", "perf_analyzer"]


def round_plan(args: argparse.Namespace, rnd: int) -> list[Sample]:
    """One round's samples in order: part A's two gateways back to back per tool, then part B's
    unary and streaming back to back per concurrency and tool; the order alternates per round."""
    plan: list[Sample] = []
    if "workers" in args.parts:
        names = alternate(("w1", "w2"), rnd)
        plan += [Sample(n, t, args.workers_concurrency, rnd) for t in tools(args) for n in names]
    if "streaming" in args.parts:
        modes = alternate(MODES, rnd)
        plan += [
            Sample("pinned", tool, conc, rnd, part="streaming", mode=mode)
            for conc in args.concurrency
            for tool in tools(args)
            for mode in modes
        ]
    return plan


# --- summary ----------------------------------------------------------------------------------


def ok(samples: list[Sample], **match: Any) -> list[Sample]:
    """The samples with a result whose fields equal `match`."""
    return [
        s
        for s in samples
        if s.rps is not None and all(getattr(s, k) == v for k, v in match.items())
    ]


def versus(samples: list[Sample], key: str, top: str, bottom: str, **match: Any) -> dict[str, Any]:
    """Per round, req/s and server CPU per request of the sample with `key` = top over the one
    with `key` = bottom, the other fields equal to `match`."""
    out: dict[str, list[float]] = {"rps": [], "server_us": []}
    for s in ok(samples, **match, **{key: top}):
        base = next(iter(ok(samples, **match, **{key: bottom}, repeat=s.repeat)), None)
        for what, ratios in out.items():
            a, b = getattr(s, what), base and getattr(base, what)
            if a is not None and b:
                ratios.append(round(a / b, 3))
    return out


def group_row(group: list[Sample]) -> dict[str, Any] | None:
    """Medians of one (gateway, tool, mode, concurrency) over the rounds; None if no result."""
    if not group:
        return None
    labels = sorted({k for s in group for k in s.server_cpu_s})
    return {
        **medians_of(group, "rps", "p50_ms", "p99_ms", "server_us", "client_us"),
        "process_us": {
            k: median_of([s.us_per_request(s.server_cpu_s.get(k)) for s in group]) for k in labels
        },
        "connections": [s.connections for s in group],
        "stalled": [s.stalled for s in group],
    }


def summarise(samples: list[Sample], args: argparse.Namespace) -> dict[str, Any]:
    """Medians and within-round ratios of both parts."""
    workers = []
    for tool in tools(args):
        for name in ("w1", "w2"):
            if row := group_row(ok(samples, part="workers", server=name, tool=tool)):
                if name == "w2":
                    row["vs_w1"] = versus(samples, "server", "w2", "w1", part="workers", tool=tool)
                workers.append({"tool": tool, "server": name, **row})
    streaming = []
    for conc in args.concurrency:
        for tool in tools(args):
            match = {"part": "streaming", "tool": tool, "concurrency": conc}
            by_mode = {mode: group_row(ok(samples, **match, mode=mode)) for mode in MODES}
            if any(by_mode.values()):
                vs = versus(samples, "mode", "streaming", "unary", **match)
                streaming.append({"tool": tool, "concurrency": conc, **by_mode, "vs_unary": vs})
    return {"workers": workers, "streaming": streaming}


# --- report -----------------------------------------------------------------------------------


def per_core(us: float | None, cores: int = 1) -> float | None:
    """Requests per second `cores` cores sustain at this CPU cost per request."""
    return None if not us else 1e6 / us * cores


def rounds_cell(ratios: list[float]) -> str:
    """'0.88 (0.81, 1.04)': the median of per-round ratios, then each round's."""
    return ratio_cell(median_of(list(ratios)), ratios)


def workers_section(
    summary: dict[str, Any], gws: dict[str, Gateway], args: argparse.Namespace
) -> list[str]:
    """Part A's table and the CPU-per-request check."""
    rows = summary["workers"]
    if not rows:
        return []
    lines = [
        "## A. `--workers auto` against `--workers 1`, nothing pinned",
        "",
        f"Gateway and client share all {os.cpu_count()} CPUs. load.py: closed loop, concurrency "
        f"{args.workers_concurrency} over {args.channels} channels (own connections); "
        f"perf_analyzer: concurrency {args.workers_concurrency}. Server CPU: every gateway "
        "process (workers, supervisor, redis-server); connections: established per worker, "
        "each round (worker 0/worker 1).",
        "",
        "| tool | gateway | req/s | p50 ms | p99 ms | req/s w2 / w1, same round: median (each) "
        "| server CPU us/req | per process us/req | client CPU us/req | connections |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for r in rows:
        procs = ", ".join(f"{k} {fmt(v, '.0f')}" for k, v in r["process_us"].items())
        ratio = rounds_cell(r["vs_w1"]["rps"]) if r["server"] == "w2" else "-"
        conns = ", ".join("/".join(str(c[k]) for k in sorted(c)) or "-" for c in r["connections"])
        lines.append(
            f"| {r['tool']} | {gws[r['server']].label} | {fmt(r['rps'], ',.0f')} | "
            f"{fmt(r['p50_ms'], '.2f')} | {fmt(r['p99_ms'], '.2f')} | {ratio} | "
            f"{fmt(r['server_us'], '.0f')} | {procs} | {fmt(r['client_us'], '.0f')} | {conns} |"
        )
    lines += ["", "Server CPU per request, `--workers auto` over `--workers 1`, same round:"]
    lines += [
        f"- {r['tool']}: {rounds_cell(r['vs_w1']['server_us'])}"
        for r in rows
        if r["server"] == "w2"
    ]
    return lines


def streaming_section(summary: dict[str, Any], gws: dict[str, Gateway]) -> list[str]:
    """Part B's table and the concurrency-1 comparison of the two tools."""
    rows = summary["streaming"]
    if not rows:
        return []
    lines = [
        f"## B. ModelStreamInfer against ModelInfer, {gws['pinned'].label}",
        "",
        f"Client on CPU {CLIENT_CPU}. Streaming: one stream per request in flight, the next "
        "request sent when its answer arrives (load.py: all streams on one connection). "
        "Streams with no answer in load.py's window (there should be none) are counted per "
        "round beside the streaming req/s, and listed under Failures. Server CPU: every "
        "gateway process.",
        "",
        "| tool | c | unary req/s | streaming req/s | streaming / unary, same round: "
        "median (each) | unary p50 / p99 ms | streaming p50 / p99 ms | unary server us/req "
        "| streaming server us/req | unary req/s per core | streaming req/s per core |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        u, s = r["unary"] or {}, r["streaming"] or {}
        stalled = s.get("stalled", [])
        stream_rps = fmt(s.get("rps"), ",.0f")
        if any(stalled):
            stream_rps += f" (STALLED streams: {', '.join(map(str, stalled))})"
        lines.append(
            f"| {r['tool']} | {r['concurrency']} | {fmt(u.get('rps'), ',.0f')} | {stream_rps} | "
            f"{rounds_cell(r['vs_unary']['rps'])} | "
            f"{fmt(u.get('p50_ms'), '.2f')} / {fmt(u.get('p99_ms'), '.2f')} | "
            f"{fmt(s.get('p50_ms'), '.2f')} / {fmt(s.get('p99_ms'), '.2f')} | "
            f"{fmt(u.get('server_us'), '.0f')} | {fmt(s.get('server_us'), '.0f')} | "
            f"{fmt(per_core(u.get('server_us')), ',.0f')} | "
            f"{fmt(per_core(s.get('server_us')), ',.0f')} |"
        )
    ones = [
        f"{r['tool']} {fmt(r['streaming']['rps'], ',.0f')} req/s, p50 "
        f"{fmt(r['streaming']['p50_ms'], '.2f')} ms, streaming / unary "
        f"{rounds_cell(r['vs_unary']['rps'])}"
        for r in rows
        if r["concurrency"] == 1 and r["streaming"]
    ]
    return [*lines, "", f"Streaming at concurrency 1: {'; '.join(ones)}."] if ones else lines


def estimate_lines(
    summary: dict[str, Any], gws: dict[str, Gateway], args: argparse.Namespace
) -> list[str]:
    """Capacity estimate: req/s per core from the CPU per request, times M cores."""
    bases = [
        (f"A, {r['tool']}, {gws[r['server']].label}", r["server_us"]) for r in summary["workers"]
    ]
    bases += [
        (f"B, {r['tool']}, {mode}, c={r['concurrency']}", r[mode]["server_us"])
        for r in summary["streaming"]
        if r["concurrency"] == max(args.concurrency)
        for mode in MODES
        if r[mode]
    ]
    if not bases:
        return []
    return [
        "## Capacity estimate",
        "",
        "Req/s per core = 1e6 / (server CPU us per request); on a machine with M cores for the "
        "gateway, M times that. Assumes the client runs elsewhere, one worker per core, and "
        "each worker costing per request what it costs here (linear scaling; the `--workers 2` "
        "rows and the CPU ratio above test that on this machine).",
        "",
        "| basis | server CPU us/req | req/s per core | "
        + " | ".join(f"M = {m}" for m in args.cores)
        + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in args.cores) + " |",
        *(
            f"| {name} | {fmt(us, '.0f')} | {fmt(per_core(us), ',.0f')} | "
            + " | ".join(fmt(per_core(us, m), ",.0f") for m in args.cores)
            + " |"
            for name, us in bases
        ),
    ]


def report(
    args: argparse.Namespace, env: dict[str, Any], gws: dict[str, Gateway],
    summary: dict[str, Any], failures: list[str],
) -> str:  # fmt: skip
    """Render the Markdown report."""
    pa = env.get("perf_analyzer", {}).get("tritonclient")
    lines = [
        f"# Scaling: `--workers` and ModelStreamInfer, {args.model} model, batch 1",
        "",
        f"{env['date']}, {env['cpu']} x {env['cpus']}, Python {env['python']}; onnxgate "
        f"{env['onnxgate']} with grpcio {env['grpcio']}, protobuf {env['protobuf']}, "
        f"onnxruntime {env['onnxruntime']}; perf_analyzer from tritonclient {pa or '-'}. "
        f"Medians of {args.repeats} round(s); load.py {args.duration:g} s after "
        f"{args.warmup:g} s warm-up; perf_analyzer -p {args.pa_window_ms} --max-trials "
        f"{args.pa_max_trials} --stability-percentage {args.pa_stability}. CPU time: load.py "
        "reads it at the edges of its measured window and divides by the requests sent in it; "
        "for perf_analyzer the whole run is taken and divided by the gateway's request counter. "
        f"Load average (1/5/15 min) at start {env['loadavg_start']}, at end "
        f"{env.get('loadavg_end')}; the run took {env.get('minutes')} min.",
        "",
        "Command: `" + display_command() + "`",
        "",
        "Gateways (`--models` a fresh repository, defaults otherwise):",
        "",
        *(f"- {gw.label}: `{shlex.join(gw.command)}`" for gw in gws.values()),
        "",
        *workers_section(summary, gws, args),
        "",
        *streaming_section(summary, gws),
        "",
        *estimate_lines(summary, gws, args),
        "",
        *failures_section(failures, blank_after=True),
    ]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--parts", type=csv_list(str, PARTS), default=list(PARTS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="tiny", choices=["tiny", "medium"])
    p.add_argument("--workers-concurrency", type=int, default=32, help="part A")
    p.add_argument("--channels", type=int, default=8, help="part A: load.py connections")
    p.add_argument("--concurrency", type=csv_list(int), default=[1, 8, 32], help="part B")
    p.add_argument("--max-streams", type=int, default=64, help="part B: the gateway's flag")
    p.add_argument("--cores", type=csv_list(int), default=[2, 4, 8, 16], help="M, estimate")
    p.add_argument("--duration", type=float, default=6.0, help="load.py measured seconds")
    p.add_argument("--warmup", type=float, default=1.0, help="load.py warm-up seconds")
    p.add_argument("--no-perf-analyzer", action="store_true")
    add_perf_analyzer_args(p, window_ms=3000)
    p.set_defaults(pa_max_trials=4)
    p.add_argument("--gateway-args", default="", help="extra flags for every onnxgate serve")
    p.add_argument("--python", default=sys.executable, help="interpreter for load.py")
    p.add_argument("--ready-timeout", type=float, default=60.0)
    p.add_argument("--out", type=Path, default=HERE / "out" / "scaling.md")
    args = p.parse_args(argv)
    if min(args.repeats, args.channels, args.workers_concurrency) < 1:
        p.error("--repeats, --channels and --workers-concurrency must be >= 1")
    if args.max_streams < max(args.concurrency):
        p.error("--max-streams must be at least the largest --concurrency")
    return args


def run_all(
    args: argparse.Namespace, work: Path, failures: list[str]
) -> tuple[dict[str, Gateway], list[Sample]]:
    """Build the model, start the gateways, measure every round."""
    repo = work / "repo"
    build_repository(repo, [args.model])
    gws = make_gateways(args, repo, work)
    samples: list[Sample] = []
    try:
        with contextlib.ExitStack() as stack:
            start_gateways(args, gws, stack)
            run_rounds(args.repeats, lambda rnd: round_plan(args, rnd),
                       lambda rnd, pos, s: measure(args, gws[s.server], s, work), samples,
                       lambda rnd: f"\n== round {rnd + 1}",
                       lambda s: f"   {describe(s)}")  # fmt: skip
    except BenchError as err:
        failures.append(str(err))
        print(f"   FAILED: {err}", flush=True)
    return gws, samples


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = parse_args(argv)
    env: dict[str, Any] = start_run(take_sigint=True)
    env["onnxgate"] = metadata.version("onnxgate")
    if (versions := perf_analyzer_version(args)) is not None:
        env["perf_analyzer"] = versions
    started = time.monotonic()
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="onnxgate-scaling-") as tmp:
        gws, samples = run_all(args, Path(tmp), failures)
    env["loadavg_end"] = load_average()
    env["minutes"] = round((time.monotonic() - started) / 60, 1)
    failures += [
        f"{s.part} {s.server} {s.tool} {s.mode} c={s.concurrency} #{s.repeat + 1}: {s.error}"
        for s in samples
        if s.error
    ]
    summary = summarise(samples, args)
    text = report(args, env, gws, summary, failures)
    return finish(
        args, env, text, failures,
        gateways={n: {"label": g.label, "command": shlex.join(g.command)} for n, g in gws.items()},
        summary=summary,
        samples=[asdict(s) | {"server_us": s.server_us, "client_us": s.client_us} for s in samples],
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
