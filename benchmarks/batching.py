"""Dynamic batching on a heavy model: the same gateway with batching off and on, side by side.

Both gateways serve `heavy` (about 1.4 ms per batch-1 run on one core) without a registry,
pinned to the server CPU; perf_analyzer drives each in turn from the client CPU, the order
alternated per round. Batching off runs with the default 4 request threads (more only makes
onnxruntime runs compete for the one core); on runs with enough threads to hold the
concurrency's requests while they wait for a batch.

    .venv/bin/python benchmarks/batching.py --repeats 3 --concurrency 32 --batch-delay-us 2000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench_report import display_command, fmt, joined, scrape, total
from driver import alternate, check_cpus, environment, run_rounds, write_results
from load_tools import add_perf_analyzer_args, measure_one
from models import build_heavy
from round_stats import median_of, round_ratios
from servers import HOST, BenchError, port_pair, start_server

MODEL = "heavy"
MODES = ("off", "on")


@dataclass
class Measured:
    mode: str
    round: int
    rps: float | None
    p50_ms: float | None
    p99_ms: float | None
    mean_batch: float | None
    error: str | None = None


def _command(args: argparse.Namespace, repo: Path, port: int, metrics: int, on: bool) -> list[str]:
    cmd = [str(args.onnxgate), "serve", "--models", str(repo), "--no-registry", "--host",
           HOST, "--grpc-port", str(port), "--metrics-port", str(metrics)]  # fmt: skip
    if on:
        cmd += ["--batch-delay-us", str(args.batch_delay_us), "--grpc-threads",
                str(args.on_threads)]  # fmt: skip
    return cmd


def _batches(metrics_port: int) -> tuple[float, float]:
    samples = scrape(metrics_port)
    labels = {"model": MODEL, "version": "1"}
    return (total(samples, "onnxgate_batch_size_sum", **labels),
            total(samples, "onnxgate_batch_size_count", **labels))  # fmt: skip


def _progress(m: Measured) -> str:
    return (f"round {m.round} {m.mode}: {fmt(m.rps, ',.0f')} req/s p99 {fmt(m.p99_ms, '.2f')}"
            f" ms mean batch {fmt(m.mean_batch, '.1f')} {m.error}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-delay-us", type=int, default=2000)
    parser.add_argument("--on-threads", type=int, default=48)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/batching.md"))
    add_perf_analyzer_args(parser, window_ms=3000)
    args = parser.parse_args(argv)
    args.model = MODEL
    check_cpus()
    measured: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="onnxgate-batching-") as tmp, \
            contextlib.ExitStack() as stack:  # fmt: skip
        work = Path(tmp)
        build_heavy(work / "repo" / MODEL / "1" / "model.onnx")
        ports = {}
        for mode in MODES:
            port, metrics = port_pair()
            cmd = _command(args, work / "repo", port, metrics, mode == "on")
            start_server(stack, None, cmd, work / f"{mode}.log", port, MODEL, 60)
            ports[mode] = (port, metrics)

        def measure(rnd: int, pos: int, mode: str) -> Measured:
            port, metrics = ports[mode]
            before = _batches(metrics)
            run = measure_one("perf_analyzer", args, port, args.concurrency, work)
            rows, runs = (a - b for a, b in zip(_batches(metrics), before, strict=True))
            mean = rows / runs if runs else None
            return Measured(mode, rnd + 1, run.rps, run.p50_ms, run.p99_ms, mean, run.error)

        run_rounds(args.repeats, lambda rnd: alternate(MODES, rnd), measure, measured,
                   line=_progress)  # fmt: skip
    return _report(args, measured)


def _report(args: argparse.Namespace, measured: list[Measured]) -> int:
    lines = [f"# Dynamic batching: {MODEL} model, concurrency {args.concurrency}", "",
             f"Command: `{display_command()}`", "",
             f"Machine: {json.dumps(environment())}", "",
             "| mode | req/s (median) | p50 ms | p99 ms | mean rows per run |",
             "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for mode in MODES:
        rows = [m for m in measured if m.mode == mode]
        lines.append(f"| batching {mode} | {fmt(median_of([m.rps for m in rows]), ',.0f')} |"
                     f" {fmt(median_of([m.p50_ms for m in rows]), '.2f')} |"
                     f" {fmt(median_of([m.p99_ms for m in rows]), '.2f')} |"
                     f" {fmt(median_of([m.mean_batch for m in rows]), '.1f')} |")  # fmt: skip
    rounds, _ = round_ratios(measured, "mode", {"on_off": ("on", "off", "rps")})
    ratios = [r["on_off"] for r in rounds if r["on_off"] is not None]
    lines += ["", f"on/off req/s per round: {joined(ratios, '.2f')};"
              f" median {fmt(median_of(ratios), '.2f')}"]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    write_results(args.out, text, [asdict(m) for m in measured])
    return 1 if any(m.error for m in measured) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"batching: {exc}", file=sys.stderr)
        sys.exit(2)
