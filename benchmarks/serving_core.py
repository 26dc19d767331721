"""Serving-core comparison: gateway vs bare thread-pool vs bare aio server under perf_analyzer."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bare_server import LAYERS
from bench_report import failures_section
from driver import csv_list, finish, load_average, run_rounds, start_run
from load_tools import Run, add_perf_analyzer_args, describe_run, measure_one
from models import build_repository
from round_stats import run_medians
from servers import (
    CLIENT_CPU,
    HERE,
    SERVER_CPU,
    TRANSPORT_LAYER,
    BenchError,
    Server,
    check_alive,
    port_pair,
    run_bounded,
    server_command,
    start_server,
)

SERVER_LABELS = {
    "gateway": "onnxgate gateway",
    "gateway-aio": "onnxgate request path on grpc.aio",
    "bare": "bare thread-pool grpc.server",
    "aio": "bare grpc.aio server",
    "bare-cq": "bare, on gRPC core's completion queue (the lane's ceiling)",
}
# "bare+LAYER[+LAYER...]": the bare thread-pool server with some of the gateway's layers, its
# gRPC transport among them.
_BARE_LAYERS = (TRANSPORT_LAYER, *LAYERS)
SERVER_LABELS |= {
    "+".join(("bare", *chosen)): "bare + " + ", ".join(chosen)
    for n in range(1, len(_BARE_LAYERS) + 1)
    for chosen in itertools.combinations(_BARE_LAYERS, n)
}
TOOLS = ("perf_analyzer", "load.py")


def run_floor(args: argparse.Namespace, model_path: Path, work: Path) -> dict[str, Any]:
    """Run floor.py once on the server CPU."""
    out_json = work / "floor.json"
    cmd = ["taskset", "-c", SERVER_CPU, args.python, str(HERE / "floor.py")]
    cmd += ["--model-path", str(model_path), "--batch", "1"]
    cmd += ["--duration", str(args.floor_duration), "--json-out", str(out_json)]
    print(
        run_bounded("floor.py", cmd, 2 * args.floor_duration + 60, dict(os.environ), work).strip()
    )
    result: dict[str, Any] = json.loads(out_json.read_text())
    return result


def start_servers(
    args: argparse.Namespace, repo: Path, work: Path, stack: contextlib.ExitStack
) -> list[Server]:
    """Start every server (all pinned to the server CPU; an idle one costs nothing)."""
    servers: list[Server] = []
    taken: set[int] = set()
    for kind in args.servers:
        port, metrics_port = port_pair(taken)
        log = work / f"server_{kind}.log"
        cmd = server_command(kind, args, repo, port, metrics_port)
        label = SERVER_LABELS[kind]
        proc = start_server(stack, label, cmd, log, port, args.model, args.ready_timeout)
        servers.append(Server(kind, port, proc, log))
    return servers


def measure_rounds(
    servers: list[Server], args: argparse.Namespace, work: Path, runs: list[Run]
) -> None:
    """Every round: every (concurrency, tool), the servers measured back to back."""

    def plan(rnd: int) -> list[tuple[int, str, Server]]:
        return [(c, t, server) for c in args.concurrency for t in args.tools for server in servers]

    def measure(rnd: int, pos: int, item: tuple[int, str, Server]) -> Run:
        conc, tool, server = item
        check_alive(server.proc, server.log, server.kind)
        run = measure_one(tool, args, server.port, conc, work)
        run.server, run.repeat = server.kind, rnd
        return run

    run_rounds(args.repeats, plan, measure, runs, lambda rnd: f"\n== round {rnd + 1}",
               lambda run: f"   {run.server:12s} {describe_run(run)}")  # fmt: skip


def markdown_table(rows: list[dict[str, Any]], tool: str, order: list[str]) -> list[str]:
    """The Markdown table of one tool's medians, in server then concurrency order."""
    lines = [
        "| server | concurrency | req/s (median) | p50 ms | p99 ms"
        " | req/s / bare thread-pool, same round: median (each round) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    mine = [r for r in rows if r["tool"] == tool]
    mine.sort(key=lambda r: (order.index(r["server"]), r["concurrency"]))
    for r in mine:
        rounds = ", ".join(f"{x:.2f}" for x in r["vs_bare_rounds"])
        ratio = "-" if r["vs_bare"] is None else f"{r['vs_bare']:.2f} ({rounds})"
        lines.append(
            f"| {SERVER_LABELS[r['server']]} | {r['concurrency']} | {r['rps']:,.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {ratio} |"
        )
    return lines


def report(
    args: argparse.Namespace,
    env: dict[str, Any],
    floor: dict[str, Any] | None,
    rows: list[dict[str, Any]],
    failures: list[str],
) -> str:
    """Render the Markdown report."""
    lines = [
        f"# Serving core: {args.model} model, batch 1",
        "",
        f"{env['date']}, {env['cpu']} x {env['cpus']}, Python {env['python']}, "
        f"grpcio {env['grpcio']}, protobuf {env['protobuf']}, onnxruntime {env['onnxruntime']}. "
        f"Server on CPU {SERVER_CPU}, load generator on CPU {CLIENT_CPU}, loopback; "
        f"medians of {args.repeats} run(s); perf_analyzer -p {args.pa_window_ms} "
        f"--max-trials {args.pa_max_trials} --stability-percentage {args.pa_stability}; "
        f"bare thread-pool server with {args.threads} threads. "
        f"Load average (1/5/15 min) at start {env['loadavg_start']}, "
        f"at end {env.get('loadavg_end')}.",
        "",
    ]
    if floor:
        o, p = floor["ort"], floor["protobuf"]
        lines += [
            f"Floor (in-process, CPU {SERVER_CPU}): onnxruntime session.run "
            f"{o['calls_per_s']:,.0f} calls/s "
            f"(p50 {o['us_p50']:.1f} us, p99 {o['us_p99']:.1f} us); "
            f"protobuf parse + frombuffer + build + serialise {p['us_mean']:.1f} us per request.",
            "",
        ]
    order = [s for s in SERVER_LABELS if s in args.servers]
    for tool in args.tools:
        lines += [f"## {tool}", "", *markdown_table(rows, tool, order), ""]
    lines += failures_section(failures, blank_after=True)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--servers", type=csv_list(str, tuple(SERVER_LABELS)), default=["gateway", "bare", "aio"]
    )
    p.add_argument("--concurrency", type=csv_list(int), default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="tiny", choices=["tiny", "medium"])
    p.add_argument("--threads", type=int, default=4, help="bare thread-pool size")
    p.add_argument("--with-load-py", action="store_true", help="also measure with load.py")
    p.add_argument("--load-duration", type=float, default=10.0)
    p.add_argument("--load-warmup", type=float, default=2.0)
    p.add_argument("--floor-duration", type=float, default=5.0)
    p.add_argument("--no-floor", action="store_true")
    add_perf_analyzer_args(p, window_ms=5000)
    p.add_argument("--gateway-args", default="", help="extra flags for onnxgate serve")
    p.add_argument("--python", default=sys.executable, help="interpreter for bare/load/floor")
    p.add_argument("--ready-timeout", type=float, default=60.0)
    p.add_argument("--out", type=Path, default=HERE / "out" / "serving_core.md")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    args.tools = list(TOOLS) if args.with_load_py else ["perf_analyzer"]
    return args


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = parse_args(argv)
    env = start_run()
    runs: list[Run] = []
    failures: list[str] = []
    floor: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="onnxgate-serving-core-") as tmp:
        work = Path(tmp)
        repo = work / "repo"
        build_repository(repo, [args.model])
        if not args.no_floor:
            try:
                floor = run_floor(args, repo / args.model / "1" / "model.onnx", work)
            except BenchError as err:
                failures.append(f"floor.py: {err}")
        # Servers measured back to back within each round, so drift in a shared host's load
        # hits them alike; ratios are taken per round, then their median reported.
        try:
            with contextlib.ExitStack() as stack:
                measure_rounds(start_servers(args, repo, work, stack), args, work, runs)
        except BenchError as err:
            failures.append(str(err))
            print(f"   FAILED: {err}", flush=True)
    env["loadavg_end"] = load_average()
    failures += [
        f"{SERVER_LABELS[r.server]} {r.tool} c={r.concurrency}: {r.error}" for r in runs if r.error
    ]
    rows = run_medians(runs)
    text = report(args, env, floor, rows, failures)
    runs_json = [asdict(r) for r in runs]
    return finish(args, env, text, failures, floor=floor, medians=rows, runs=runs_json)


if __name__ == "__main__":
    sys.exit(main())
