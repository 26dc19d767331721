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
import os
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench_report import display_command, fmt, scrape, total
from models import build_heavy
from serving_core import (
    BenchError,
    Run,
    add_perf_analyzer_args,
    check_cpus,
    environment,
    free_port,
    measure_one,
    running_server,
    wait_ready,
)

MODEL = "heavy"


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
           "127.0.0.1", "--grpc-port", str(port), "--metrics-port", str(metrics)]  # fmt: skip
    if on:
        cmd += ["--batch-delay-us", str(args.batch_delay_us), "--grpc-threads",
                str(args.on_threads)]  # fmt: skip
    return cmd


def _batches(metrics_port: int) -> tuple[float, float]:
    samples = scrape(metrics_port)
    labels = {"model": MODEL, "version": "1"}
    return (total(samples, "onnxgate_batch_size_sum", **labels),
            total(samples, "onnxgate_batch_size_count", **labels))  # fmt: skip


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
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        ports = {}
        for mode in ("off", "on"):
            port, metrics = free_port(), free_port()
            cmd = _command(args, work / "repo", port, metrics, mode == "on")
            proc = stack.enter_context(running_server(cmd, work / f"{mode}.log", env))
            wait_ready(port, MODEL, proc, 60, work / f"{mode}.log")
            ports[mode] = (port, metrics)
        for r in range(1, args.repeats + 1):
            for mode in ("off", "on") if r % 2 else ("on", "off"):
                port, metrics = ports[mode]
                before = _batches(metrics)
                run: Run = measure_one("perf_analyzer", args, port, args.concurrency, work)
                rows, runs = (a - b for a, b in zip(_batches(metrics), before, strict=True))
                mean = rows / runs if runs else None
                measured.append(Measured(mode, r, run.rps, run.p50_ms, run.p99_ms, mean,
                                         run.error))  # fmt: skip
                print(f"round {r} {mode}: {fmt(run.rps, ',.0f')} req/s p99"
                      f" {fmt(run.p99_ms, '.2f')} ms mean batch {fmt(mean, '.1f')}"
                      f" {run.error}", flush=True)  # fmt: skip
    return _report(args, measured)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _report(args: argparse.Namespace, measured: list[Measured]) -> int:
    lines = [f"# Dynamic batching: {MODEL} model, concurrency {args.concurrency}", "",
             f"Command: `{display_command()}`", "",
             f"Machine: {json.dumps(environment())}", "",
             "| mode | req/s (median) | p50 ms | p99 ms | mean rows per run |",
             "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for mode in ("off", "on"):
        rows = [m for m in measured if m.mode == mode]
        lines.append(f"| batching {mode} | {fmt(_median([m.rps for m in rows]), ',.0f')} |"
                     f" {fmt(_median([m.p50_ms for m in rows]), '.2f')} |"
                     f" {fmt(_median([m.p99_ms for m in rows]), '.2f')} |"
                     f" {fmt(_median([m.mean_batch for m in rows]), '.1f')} |")  # fmt: skip
    ratios = []
    for r in range(1, args.repeats + 1):
        got = {m.mode: m.rps for m in measured if m.round == r}
        if got.get("on") and got.get("off"):
            ratios.append(got["on"] / got["off"])  # type: ignore[operator]
    lines += ["", f"on/off req/s per round: {', '.join(f'{x:.2f}' for x in ratios)};"
              f" median {fmt(_median(list(ratios)), '.2f')}"]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps([asdict(m) for m in measured], indent=2))
    return 1 if any(m.error for m in measured) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"batching: {exc}", file=sys.stderr)
        sys.exit(2)
