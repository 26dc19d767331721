"""Interleaved A/B of two gateway builds under perf_analyzer: is the request path as fast?

Both gateways run at once on the server CPU, each with its private registry, serving the
tiny model; every round measures each at every concurrency, alternating which goes first,
so drift in the shared machine's load falls on both alike. Reports per concurrency the
req/s of each round, the ratio B/A per round and its median.

    python benchmarks/ab_request_path.py --variant before=/tmp/onnxgate-before \\
        --variant after=.venv/bin/onnxgate --rounds 5 --concurrency 8,32

A variant is an `onnxgate` executable; for an older commit, a wrapper that runs
`python -m gateway "$@"` in a worktree of it.

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
import tempfile
import time
from pathlib import Path

from bench_report import joined
from driver import alternate, csv_list, run_rounds
from load_tools import Run, add_perf_analyzer_args, measure_one
from models import build_repository
from round_stats import paired_ratios
from servers import HOST, port_pair, start_server

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
        ports = {}
        for name, executable in variants.items():
            port, metrics_port = port_pair()
            command = [str(executable), "serve", "--models", str(repo), "--grpc-port", str(port),
                       "--metrics-port", str(metrics_port), "--host", HOST,
                       "--data-dir", str(work / f"data-{name}")]  # fmt: skip
            if name == args.log_predictions and args.prediction_cap is not None:
                command += ["--prediction-log-max-per-second", f"{args.prediction_cap:g}"]
            start_server(stack, None, command, work / f"{name}.log", port, args.model,
                         args.ready_timeout)  # fmt: skip
            ports[name] = port
            if name == args.log_predictions:
                _log_predictions(work / f"data-{name}", args.model)

        def plan(rnd: int) -> list[tuple[int, str]]:
            return [(c, name) for c in args.concurrency for name in alternate(list(variants), rnd)]

        def measure(rnd: int, pos: int, item: tuple[int, str]) -> Run:
            concurrency, name = item
            run = measure_one("perf_analyzer", args, ports[name], concurrency, work)
            run.server, run.repeat = name, rnd
            return run

        run_rounds(args.rounds, plan, measure, runs, line=_progress)
        load = os.getloadavg()
    first, second = variants
    print(f"\nload average at the end: {load[0]:.2f}")
    print(f"| concurrency | {first} req/s | {second} req/s | {second} / {first} per round |"
          " median |")  # fmt: skip
    print("| ---: | --- | --- | --- | ---: |")
    for concurrency in args.concurrency:
        a, b = ([r.rps or float("nan") for r in runs if (r.server, r.concurrency) == key]
                for key in ((first, concurrency), (second, concurrency)))  # fmt: skip
        ratios = paired_ratios(a, b)
        # A round where either side failed to measure has no ratio; NaN would poison the median.
        measured = [r for r in ratios if not math.isnan(r)]
        middle = f"{statistics.median(measured):.3f} of {len(measured)}" if measured else "-"
        print(f"| {concurrency} | {joined(a, ',.0f')} | {joined(b, ',.0f')} |"
              f" {joined(ratios, '.3f')} | {middle} |")  # fmt: skip


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
