"""Interleaved A/B of two gateway builds under perf_analyzer: is the request path as fast?

Both gateways run at once on the server CPU, each with its private registry, serving the
tiny model; every round measures each at every concurrency, alternating which goes first,
so drift in the shared machine's load falls on both alike. Reports per concurrency the
req/s of each round, the ratio B/A per round and its median; and the same for the CPU time
each gateway's process group (the gateway and its private redis-server, both on the server
CPU) spent per request answered during its runs, which other tenants' load moves far less
than req/s.

    python benchmarks/ab_request_path.py --variant before=/tmp/onnxgate-before \\
        --variant after=.venv/bin/onnxgate --rounds 5 --concurrency 8,32

A variant is an `onnxgate` executable; for an older commit, a wrapper that runs
`python -m gateway "$@"` in a worktree of it.

With `--simultaneous SECONDS`, a round loads both gateways at once instead, each with its own
perf_analyzer at the same concurrency (both on the client CPU, both gateways on the server
CPU), and compares what each answered, and the CPU each spent per request, over the same
SECONDS: whatever else the shared machine runs then falls on both at the same moments, which
interleaving alone cannot promise when a round swings by a quarter. The two gateways share
the server CPU as the scheduler splits it between their threads, so the CPU per request is
the figure to trust; req/s follows it when the split is even.

With `--log-predictions NAME`, variant NAME's model gets a quality config (binary, its
`probabilities` output) before the first round, so that gateway logs its predictions and the
other does not: the prediction log's cost; at the gateway's default cap of predictions logged
a second, or with `--prediction-cap N`.

    python benchmarks/ab_request_path.py --variant off=.venv/bin/onnxgate \\
        --variant logged=.venv/bin/onnxgate --log-predictions logged --concurrency 32 \\
        --prediction-cap 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench_report import joined, scrape, total
from driver import alternate, csv_list, run_rounds
from load_tools import (
    Run,
    add_perf_analyzer_args,
    measure_one,
    perf_analyzer_command,
    perf_analyzer_env,
)
from models import build_repository
from round_stats import paired_ratios
from servers import CLIENT_CPU, HOST, BenchError, group_cpu_seconds, port_pair, start_server

from gateway.quality.tasks import CONFIG_REFRESH_SECONDS
from registry_client import RegistryClient
from registry_client.connection import private_redis_url
from registry_client.quality.task import QualityConfig


def _variant(text: str) -> tuple[str, Path]:
    name, _, command = text.partition("=")
    if not name or not command:
        raise argparse.ArgumentTypeError(f"expected NAME=EXECUTABLE, got {text!r}")
    return name, Path(command)


def _progress(run: Run) -> str:
    if run.tool == "perf_analyzer" and run.rps is None and run.error is None:  # simultaneous
        return f"round {run.repeat + 1} c={run.concurrency}: {run.server}"
    return (
        f"round {run.repeat + 1} {run.server} c={run.concurrency}: {run.rps} req/s,"
        f" p50 {run.p50_ms} ms, p99 {run.p99_ms} ms {run.error or ''}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", type=_variant, action="append", required=True,
                        help="NAME=EXECUTABLE, twice: A then B")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=csv_list(int), default=[8, 32])
    parser.add_argument("--ready-timeout", type=float, default=90.0)
    parser.add_argument("--model", default="tiny", choices=["tiny", "medium"])
    parser.add_argument("--log-predictions", metavar="NAME", default=None,
                        help="the variant whose model's predictions are logged")  # fmt: skip
    parser.add_argument(
        "--prediction-cap",
        type=float,
        default=None,
        help="its --prediction-log-max-per-second (default: the gateway's)",
    )
    parser.add_argument("--simultaneous", type=float, default=None, metavar="SECONDS",
                        help="load both gateways at once for SECONDS a round")  # fmt: skip
    add_perf_analyzer_args(parser, window_ms=3000)
    args = parser.parse_args()
    if len(args.variant) != 2:
        parser.error("give exactly two --variant NAME=EXECUTABLE")
    variants = dict(args.variant)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="ab-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        repo = work / "repo"
        build_repository(repo, [args.model])
        ports: dict[str, tuple[int, int, int]] = {}  # name -> gRPC port, metrics port, pid
        cpu_us: dict[tuple[int, str, int], float] = {}  # (round, name, concurrency) -> us/request
        for name, executable in variants.items():
            port, metrics_port = port_pair()
            command = [str(executable), "serve", "--models", str(repo), "--grpc-port", str(port),
                       "--metrics-port", str(metrics_port), "--host", HOST,
                       "--data-dir", str(work / f"data-{name}")]  # fmt: skip
            if name == args.log_predictions and args.prediction_cap is not None:
                command += ["--prediction-log-max-per-second", f"{args.prediction_cap:g}"]
            proc = start_server(stack, None, command, work / f"{name}.log", port, args.model,
                                args.ready_timeout)  # fmt: skip
            ports[name] = (port, metrics_port, proc.pid)
            if name == args.log_predictions:
                _log_predictions(work / f"data-{name}", args.model)

        def plan(rnd: int) -> list[tuple[int, str]]:
            if args.simultaneous is not None:  # one item: both at once
                return [(c, "") for c in args.concurrency]
            return [(c, name) for c in args.concurrency for name in alternate(list(variants), rnd)]

        def measure(rnd: int, pos: int, item: tuple[int, str]) -> Run:
            concurrency, name = item
            if not name:
                found = _together(args, ports, concurrency, work)
                for each, (rps, spent) in found.items():
                    cpu_us[rnd, each, concurrency] = spent
                    runs.append(Run(each, "perf_analyzer", concurrency, rnd, rps))
                return Run(" and ".join(f"{n} {rps:,.0f} req/s, {spent:.0f} us CPU/req"
                                        for n, (rps, spent) in found.items()),
                           "perf_analyzer", concurrency, rnd)  # fmt: skip
            port, metrics_port, pid = ports[name]
            before = _answered(metrics_port, args.model), group_cpu_seconds(pid)
            run = measure_one("perf_analyzer", args, port, concurrency, work)
            answered = _answered(metrics_port, args.model) - before[0]
            if answered > 0:
                cpu_us[rnd, name, concurrency] = (
                    (group_cpu_seconds(pid) - before[1]) / answered * 1e6
                )
            run.server, run.repeat = name, rnd
            return run

        shown: list[Run] = []  # what each measurement printed; both gateways' runs are in `runs`
        run_rounds(args.rounds, plan, measure, shown if args.simultaneous else runs,
                   line=_progress)  # fmt: skip
        load = os.getloadavg()
    first, second = variants
    print(f"\nload average at the end: {load[0]:.2f}")
    for concurrency in args.concurrency:

        def per_round(field: str, name: str, concurrency: int = concurrency) -> list[float]:
            return [getattr(r, field) or math.nan for r in runs
                    if (r.server, r.concurrency) == (name, concurrency)]  # fmt: skip

        rps = {name: per_round("rps", name) for name in variants}
        # perf_analyzer's latencies; not measured with --simultaneous (NaN, shown "nan").
        p50 = {name: per_round("p50_ms", name) for name in variants}
        p99 = {name: per_round("p99_ms", name) for name in variants}
        cpu = {name: [cpu_us.get((rnd, name, concurrency), math.nan)
                      for rnd in range(args.rounds)]
               for name in variants}  # fmt: skip
        print(f"\nconcurrency {concurrency}:\n")
        print(f"| per round | {first} | {second} | {second} / {first} | median |")
        print("| --- | --- | --- | --- | ---: |")
        # Latency and CPU: a ratio below 1 is B better.
        for what, values in (("req/s", rps), ("CPU us per request", cpu), ("p50 ms", p50),
                             ("p99 ms", p99)):  # fmt: skip
            a, b = values[first], values[second]
            ratios = paired_ratios(a, b)
            # A round where either side failed to measure has no ratio; NaN would poison
            # the median.
            measured = [r for r in ratios if not math.isnan(r)]
            middle = f"{statistics.median(measured):.3f} of {len(measured)}" if measured else "-"
            form = ".2f" if what.endswith(" ms") else ",.0f"
            print(f"| {what} | {joined(a, form)} | {joined(b, form)} |"
                  f" {joined(ratios, '.3f')} | {middle} |")  # fmt: skip


# perf_analyzer's first requests (connections, the model's first runs) are left out.
_WARMUP_SECONDS = 5.0


def _together(
    args: argparse.Namespace, ports: dict[str, tuple[int, int, int]], concurrency: int,
    work: Path,
) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Load every gateway at once; name -> (req/s answered, CPU us per request) over the
    same `args.simultaneous` seconds."""
    seconds = args.simultaneous
    # One window longer than the whole measurement: perf_analyzer only has to keep loading.
    long = argparse.Namespace(
        **{
            **vars(args),
            "pa_max_trials": 1,
            "pa_window_ms": int((_WARMUP_SECONDS + seconds + 30) * 1e3),
        }
    )
    env = perf_analyzer_env(args)
    loads = []
    try:
        for name, (port, _, _) in ports.items():
            command = perf_analyzer_command(long, port, concurrency, work / f"{name}.csv",
                                            ["taskset", "-c", CLIENT_CPU])  # fmt: skip
            loads.append(subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, env=env))  # fmt: skip
        time.sleep(_WARMUP_SECONDS)
        before = {n: (_answered(m, args.model), group_cpu_seconds(p))
                  for n, (_, m, p) in ports.items()}  # fmt: skip
        started = time.monotonic()
        time.sleep(seconds)
        after = {n: (_answered(m, args.model), group_cpu_seconds(p))
                 for n, (_, m, p) in ports.items()}  # fmt: skip
        elapsed = time.monotonic() - started
        if any(load.poll() is not None for load in loads):
            raise BenchError("a perf_analyzer exited before the measurement ended")
    finally:
        for load in loads:
            load.terminate()
            load.wait(timeout=30)
    found = {}
    for name in ports:
        answered = after[name][0] - before[name][0]
        spent = after[name][1] - before[name][1]
        if answered <= 0:
            raise BenchError(f"{name} answered nothing in {elapsed:.0f} s")
        found[name] = (answered / elapsed, spent / answered * 1e6)
    return found


def _answered(metrics_port: int, model: str) -> float:
    """The requests for `model` the gateway has answered, whatever their outcome."""
    return total(scrape(metrics_port), "onnxgate_requests_total", model=model, role="primary")


def _log_predictions(data_dir: Path, model: str) -> None:
    """Give the model a quality config; the gateway follows it within its config refresh."""
    client = RegistryClient.from_url(private_redis_url(data_dir))
    try:
        config = QualityConfig("binary", "probabilities", 1)
        client.create_model(model, actor="benchmark", quality=config)
    finally:
        client.close()
    time.sleep(CONFIG_REFRESH_SECONDS + 1)  # the gateway reads configs this often


if __name__ == "__main__":
    main()
