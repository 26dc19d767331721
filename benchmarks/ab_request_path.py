"""Interleaved A/B of two gateway builds under perf_analyzer: is the request path as fast?

Both gateways run at once on the server CPU, each with its private registry, serving the
tiny model; every round measures each at every concurrency, alternating which goes first,
so drift in the shared machine's load falls on both alike. Reports per concurrency the
req/s of each round, the ratio B/A per round and its median.

    python benchmarks/ab_request_path.py --variant before=/tmp/onnxgate-before \\
        --variant after=.venv/bin/onnxgate --rounds 5 --concurrency 8,32

A variant is an `onnxgate` executable; for an older commit, a wrapper that runs
`python -m gateway "$@"` in a worktree of it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
from pathlib import Path

import serving_core as core
from models import build_repository


def _variant(text: str) -> tuple[str, Path]:
    name, _, command = text.partition("=")
    if not name or not command:
        raise argparse.ArgumentTypeError(f"expected NAME=EXECUTABLE, got {text!r}")
    return name, Path(command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", type=_variant, action="append", required=True,
                        help="NAME=EXECUTABLE, twice: A then B")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=core.csv_list(int), default=[8, 32])
    parser.add_argument("--ready-timeout", type=float, default=90.0)
    parser.add_argument("--model", default="tiny", choices=["tiny", "medium"])
    core.add_perf_analyzer_args(parser, window_ms=3000)
    args = parser.parse_args()
    if len(args.variant) != 2:
        parser.error("give exactly two --variant NAME=EXECUTABLE")
    variants = dict(args.variant)
    rps: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="ab-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        repo = work / "repo"
        build_repository(repo, [args.model])
        ports = {}
        for name, executable in variants.items():
            port, metrics_port = core.free_port(), core.free_port()
            command = [str(executable), "serve", "--models", str(repo), "--grpc-port", str(port),
                       "--metrics-port", str(metrics_port), "--host", core.HOST,
                       "--data-dir", str(work / f"data-{name}")]  # fmt: skip
            log = work / f"{name}.log"
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            server = stack.enter_context(core.running_server(command, log, env))
            core.wait_ready(port, args.model, server, args.ready_timeout, log)
            ports[name] = port
        for round_index in range(args.rounds):
            for concurrency in args.concurrency:
                order = list(variants)
                if round_index % 2:
                    order.reverse()
                for name in order:
                    run = core.measure_one("perf_analyzer", args, ports[name], concurrency, work)
                    rps.setdefault((name, concurrency), []).append(run.rps or float("nan"))
                    print(f"round {round_index + 1} {name} c={concurrency}: {run.rps} req/s,"
                          f" p50 {run.p50_ms} ms, p99 {run.p99_ms} ms {run.error or ''}",
                          flush=True)  # fmt: skip
        load = os.getloadavg()
    first, second = variants
    print(f"\nload average at the end: {load[0]:.2f}")
    print(f"| concurrency | {first} req/s | {second} req/s | {second} / {first} per round |"
          " median |")  # fmt: skip
    print("| ---: | --- | --- | --- | ---: |")
    for concurrency in args.concurrency:
        a, b = rps[(first, concurrency)], rps[(second, concurrency)]
        ratios = [y / x for x, y in zip(a, b, strict=True)]
        print(f"| {concurrency} | {', '.join(f'{x:,.0f}' for x in a)} |"
              f" {', '.join(f'{y:,.0f}' for y in b)} | {', '.join(f'{r:.3f}' for r in ratios)}"
              f" | {statistics.median(ratios):.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
