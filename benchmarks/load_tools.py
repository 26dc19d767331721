"""The load generators the drivers measure with: perf_analyzer and load.py, pinned to the
client CPU, each run one Run (req/s, p50, p99, or the error)."""

from __future__ import annotations

import argparse
import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from servers import CLIENT_CPU, HERE, HOST, ROOT, BenchError, run_bounded

UNSTABLE = "Failed to obtain stable measurement"


@dataclass
class Run:
    """One measurement: a tool at one concurrency against one server."""

    server: str
    tool: str
    concurrency: int
    repeat: int
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    error: str | None = None


def add_perf_analyzer_args(p: argparse.ArgumentParser, window_ms: int) -> None:
    """perf_analyzer's flags and where it and the gateway are installed; shared by drivers."""
    venv_triton = ROOT / ".venv-triton"
    p.add_argument("--pa-window-ms", type=int, default=window_ms)
    p.add_argument("--pa-max-trials", type=int, default=6)
    p.add_argument("--pa-stability", type=int, default=15)
    p.add_argument("--pa-retries", type=int, default=1, help="reruns of an unstable measurement")
    p.add_argument("--perf-analyzer", type=Path, default=venv_triton / "bin" / "perf_analyzer")
    p.add_argument(
        "--perf-analyzer-lib",
        type=Path,
        default=venv_triton / "lib/python3.11/site-packages/nvidia/cuda_runtime/lib",
    )
    p.add_argument("--onnxgate", type=Path, default=ROOT / ".venv" / "bin" / "onnxgate")


def perf_analyzer_command(
    args: argparse.Namespace,
    port: int,
    conc: int,
    out_csv: Path | str,
    prefix: list[str],
    streaming: bool = False,
) -> list[str]:
    """perf_analyzer's command line: batch 1 at concurrency `conc` (or at args.request_rate
    requests/s when a driver has that flag and sets it), its CSV written to `out_csv`."""
    cmd = [*prefix, str(args.perf_analyzer), "-m", args.model, "-i", "grpc"]
    cmd += ["-u", f"{HOST}:{port}", "-b", "1"]
    rate = getattr(args, "request_rate", None)  # a fixed arrival rate instead of concurrency
    cmd += ["--request-rate-range", str(rate)] if rate else ["--concurrency-range", str(conc)]
    cmd += ["-p", str(args.pa_window_ms), "--max-trials", str(args.pa_max_trials)]
    cmd += ["--stability-percentage", str(args.pa_stability), "-f", str(out_csv)]
    return [*cmd, "--streaming"] if streaming else cmd


def perf_analyzer_env(args: argparse.Namespace) -> dict[str, str]:
    """This process's environment with perf_analyzer's CUDA runtime library on the path."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(args.perf_analyzer_lib), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return env


def perf_analyzer_timeout(args: argparse.Namespace) -> float:
    """Worst case: every trial window runs, plus start-up and the final report."""
    return float(args.pa_window_ms / 1e3 * (args.pa_max_trials + 2) + 60)


def parse_pa_csv(path: Path) -> tuple[float, float, float]:
    """Read req/s, p50 and p99 (ms) from perf_analyzer's CSV (latencies are in us)."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise BenchError(f"perf_analyzer wrote no rows to {path}")
    row = rows[0]
    return (
        float(row["Inferences/Second"]),
        float(row["p50 latency"]) / 1e3,
        float(row["p99 latency"]) / 1e3,
    )


def run_perf_analyzer(args: argparse.Namespace, port: int, conc: int, work: Path) -> Run:
    """One perf_analyzer measurement pinned to the client CPU."""
    out_csv = work / f"pa_{port}_{conc}.csv"
    out_csv.unlink(missing_ok=True)
    cmd = perf_analyzer_command(args, port, conc, out_csv, ["taskset", "-c", CLIENT_CPU])
    env = perf_analyzer_env(args)
    for attempt in range(args.pa_retries + 1):
        try:
            run_bounded("perf_analyzer", cmd, perf_analyzer_timeout(args), env, work)
            break
        except BenchError as err:
            # On a noisy shared machine a window can miss the stability band: retry, bounded.
            if UNSTABLE not in str(err) or attempt == args.pa_retries:
                raise
            print(f"   perf_analyzer c={conc}: unstable, retrying", flush=True)
    rps, p50, p99 = parse_pa_csv(out_csv)
    return Run("", "perf_analyzer", conc, 0, rps, p50, p99)


def run_load_py(args: argparse.Namespace, port: int, conc: int, work: Path) -> Run:
    """One load.py closed-loop measurement pinned to the client CPU."""
    out_json = work / f"load_{port}_{conc}.json"
    out_json.unlink(missing_ok=True)
    cmd = ["taskset", "-c", CLIENT_CPU, args.python, str(HERE / "load.py")]
    cmd += ["--target", f"{HOST}:{port}", "--model", args.model, "--concurrency", str(conc)]
    cmd += ["--duration", str(args.load_duration), "--warmup", str(args.load_warmup)]
    cmd += ["--json-out", str(out_json)]
    run_bounded("load.py", cmd, args.load_warmup + args.load_duration + 60, dict(os.environ), work)
    result = json.loads(out_json.read_text())
    lat = result["latency_ms"]
    errors = result["errors"] or None
    error = f"errors {errors}" if errors else None
    return Run("", "load.py", conc, 0, result["rps"], lat["p50"], lat["p99"], error)


def measure_one(tool: str, args: argparse.Namespace, port: int, conc: int, work: Path) -> Run:
    """Run one tool; a tool failure becomes a Run with an error, not an abort."""
    try:
        if tool == "perf_analyzer":
            return run_perf_analyzer(args, port, conc, work)
        return run_load_py(args, port, conc, work)
    except BenchError as err:
        return Run("", tool, conc, 0, error=str(err))


def describe_run(run: Run) -> str:
    """One progress line."""
    head = f"{run.tool:13s} c={run.concurrency:<3d} #{run.repeat + 1}"
    if run.rps is None:
        return f"{head} FAILED: {run.error}"
    text = f"{head} {run.rps:9.1f} req/s  p50 {run.p50_ms:.3f} ms  p99 {run.p99_ms:.3f} ms"
    return f"{text}  ({run.error})" if run.error else text
