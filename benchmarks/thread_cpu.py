"""Where a gateway's CPU goes under load: microseconds per request answered, per thread.

Starts each variant's server on the server CPU (a gateway's private redis-server too), loads
it with perf_analyzer from the client CPU for a fixed number of requests after a warm-up, and
reads every thread's CPU time from /proc before and after; py-spy names the Python threads
(grpcio's C threads name themselves). Threads of one kind are summed: `onnxgate-rpc (N)` is
the N call threads. A variant is a gateway's extra flags, or `bare` for the bare thread-pool
server (benchmarks/bare_server.py), the ceiling to compare with, or `bare+transport` for it on
the gateway's gRPC transport (any of serving_core.py's `bare+LAYER` kinds), or `bare-cq` for
the bare handler on gRPC core's completion queue, as the gateway's ModelInfer lane. Variants
take turns in each round, so the shared machine's drift falls on all alike; the table shows
medians of rounds.

    python benchmarks/thread_cpu.py --variant default= --variant bare=bare \\
        --rounds 3 --requests 60000 --concurrency 32
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from driver import alternate
from load_tools import (
    add_perf_analyzer_args,
    perf_analyzer_command,
    perf_analyzer_env,
)
from models import build_repository
from servers import CLIENT_CPU, HOST, BenchError, port_pair, server_command, start_server

_TICK = os.sysconf("SC_CLK_TCK")
_WARMUP_REQUESTS = 5000
_START_SECONDS = 30.0  # perf_analyzer's start-up and its model queries
_SLOWEST_RATE = 500.0  # req/s: a load slower than this is taken to have hung
_ATTEMPTS = 3
_NUMBERED = re.compile(r"_\d+$")  # onnxgate-rpc_12 is one of the call threads
_DUMPED = re.compile(r'Thread (\d+) \([^)]*\): "([^"]*)"')


def _variant(text: str) -> tuple[str, list[str]]:
    name, sep, flags = text.partition("=")
    if not name or not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=FLAGS (FLAGS may be empty), got {text!r}")
    return name, shlex.split(flags)


def _bare_kind(flags: list[str]) -> bool:
    """Whether a variant's flags name a bare server: `bare`, `bare+LAYER[+LAYER...]` or
    `bare-cq` (see servers.server_command)."""
    return len(flags) == 1 and (flags[0] == "bare-cq" or flags[0].split("+")[0] == "bare")


def _thread_ticks(pids: list[int]) -> dict[tuple[int, int], int]:
    """(pid, tid) -> user + system clock ticks, for every thread of `pids`."""
    found = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            found[pid, int(task.name)] = int(fields[11]) + int(fields[12])
    return found


def _thread_names(pid: int, py_spy: str) -> dict[int, str]:
    """tid -> name: Python's thread names from py-spy, else the kernel's (C threads)."""
    names = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            names[int(task.name)] = (task / "comm").read_text().strip() + " (C)"
    dump = subprocess.run([py_spy, "dump", "--pid", str(pid), "--nonblocking"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    for tid, name in _DUMPED.findall(dump.stdout):
        names[int(tid)] = name
    return names


def _kind(name: str) -> str:
    return _NUMBERED.sub("", name)


def _measure(args: argparse.Namespace, port: int, pids: list[int],
             work: Path) -> tuple[dict[tuple[int, int], int], float]:  # fmt: skip
    """Warm up, then load the server with args.requests requests: (ticks per thread, seconds)
    meanwhile (the load's connection set-up included: a few ms against seconds). A load that
    hangs is measured again (see _load), at most _ATTEMPTS times."""
    _load(args, port, _WARMUP_REQUESTS, work)
    for _ in range(_ATTEMPTS):
        before, started = _thread_ticks(pids), time.monotonic()
        if _load(args, port, args.requests, work):
            after, seconds = _thread_ticks(pids), time.monotonic() - started
            return {key: ticks - before.get(key, 0) for key, ticks in after.items()}, seconds
    raise BenchError(f"perf_analyzer hung {_ATTEMPTS} times in a row")


def _load(args: argparse.Namespace, port: int, requests: int, work: Path) -> bool:
    """Send `requests` requests; False when perf_analyzer outlasted its bound. With
    --request-count it now and then never exits after its last answer (seen against the
    gateway and the bare server alike: every request answered, the client waiting on)."""
    command = perf_analyzer_command(args, port, args.concurrency, work / "pa.csv",
                                    ["taskset", "-c", CLIENT_CPU])  # fmt: skip
    command += ["--request-count", str(requests)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              env=perf_analyzer_env(args),
                              timeout=_START_SECONDS + requests / _SLOWEST_RATE)  # fmt: skip
    except subprocess.TimeoutExpired:
        print(f"  perf_analyzer hung after {requests:,} requests; measuring again", flush=True)
        return False
    if done.returncode != 0:
        raise BenchError(f"perf_analyzer exited {done.returncode}: {done.stdout[-2000:]}")
    return True


def _redis_pid(gateway_pid: int) -> int | None:
    """The private redis-server the gateway started (its child), if any."""
    children = Path(f"/proc/{gateway_pid}/task/{gateway_pid}/children").read_text().split()
    for child in children:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/comm").read_text().strip() == "redis-server":
                return int(child)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", type=_variant, action="append", required=True,
                        help="NAME=FLAGS: onnxgate serve's extra flags (may be empty), or"
                             " NAME=bare (or bare+LAYER...) for the bare server")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=60000, help="measured per run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--model", default="tiny", choices=["tiny", "medium"])
    parser.add_argument("--ready-timeout", type=float, default=90.0)
    parser.add_argument("--python", default=sys.executable, help="the bare server's interpreter")
    parser.add_argument("--threads", type=int, default=4, help="the bare server's threads")
    add_perf_analyzer_args(parser, window_ms=3000)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        parser.error("py-spy is not installed (pip install -e '.[dev]')")
    variants = dict(args.variant)
    # variant -> thread kind -> us per request, one value per round
    costs: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in variants}
    counts: dict[str, dict[str, int]] = {name: {} for name in variants}
    with tempfile.TemporaryDirectory(prefix="thread-cpu-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        build_repository(work / "repo", [args.model])
        started = {}
        for name, flags in variants.items():
            port, metrics_port = port_pair()
            if _bare_kind(flags):
                command = server_command(flags[0], args, work / "repo", port, metrics_port)
            else:
                command = [str(args.onnxgate), "serve", "--models", str(work / "repo"),
                           "--grpc-port", str(port), "--metrics-port", str(metrics_port),
                           "--host", HOST, "--data-dir", str(work / f"data-{name}"),
                           *flags]  # fmt: skip
            proc = start_server(stack, f"{name}", command, work / f"{name}.log", port,
                                args.model, args.ready_timeout)  # fmt: skip
            started[name] = (port, proc.pid)
        for rnd in range(args.rounds):
            for name in alternate(list(variants), rnd):
                port, pid = started[name]
                redis = _redis_pid(pid)
                pids = [pid] if redis is None else [pid, redis]
                spent, seconds = _measure(args, port, pids, work)
                rate = args.requests / seconds
                answered = args.requests
                names = _thread_names(pid, py_spy)
                by_kind: dict[str, float] = defaultdict(float)
                threads: dict[str, int] = defaultdict(int)
                for (owner, tid), ticks in spent.items():
                    kind = "redis-server" if owner != pid else _kind(names.get(tid, "?"))
                    by_kind[kind] += ticks / _TICK / answered * 1e6
                    threads[kind] += 1
                for kind, us in by_kind.items():
                    costs[name][kind].append(us)
                counts[name] = dict(threads)
                print(f"round {rnd + 1} {name}: ~{rate:,.0f} req/s,"
                      f" {sum(by_kind.values()):.0f} us CPU per request", flush=True)  # fmt: skip
    _report(args, variants, costs, counts)
    return 0


def _report(
    args: argparse.Namespace,
    variants: dict[str, list[str]],
    costs: dict[str, dict[str, list[float]]],
    counts: dict[str, dict[str, int]],
) -> None:
    names = list(variants)

    def heaviest_first(kind: str) -> float:
        return -max(statistics.median(costs[n].get(kind, [0.0])) for n in names)

    kinds = sorted({k for c in costs.values() for k in c}, key=heaviest_first)
    print(f"\nCPU us per request answered, c={args.concurrency}, medians of {args.rounds}"
          f" rounds ({args.requests:,} requests each);"
          " threads of a kind summed (how many)\n")  # fmt: skip
    print("| thread | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    totals = {n: [sum(v[i] for v in costs[n].values() if i < len(v)) for i in range(args.rounds)]
              for n in names}  # fmt: skip
    for kind in kinds:
        cells = []
        for n in names:
            values = costs[n].get(kind)
            cells.append("-" if not values else
                         f"{statistics.median(values):.1f} ({counts[n].get(kind, 0)})")  # fmt: skip
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print("| **total** | " + " | ".join(f"**{statistics.median(totals[n]):.0f}**" for n in names)
          + " |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
