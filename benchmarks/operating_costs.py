"""What the operators' surfaces cost: a scrape of /metrics with and without the process and
build families, a supervisor's scrape per worker, and a container probe's start.

- Scrape: generate_latest() over a gateway's metric registry holding the series of a model
  with 2 versions x 30 features of drift gauges and a few request codes, with and without
  process_*, python_info, onnxgate_build_info and onnxgate_memory_limit_bytes; rounds
  interleaved, medians.
- Supervisor: the worker process collector alone, for N live processes (children sleeping).
- Probe: `onnxgate probe` against a closed port (it connects, is refused, exits 1) as the
  image's HEALTHCHECK runs it, against the same probe with the imports the command line made
  before it loaded `serve` lazily (gateway.app, the supervisor, security material); rounds
  interleaved, medians of wall time per run.

    python benchmarks/operating_costs.py --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest

from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.metrics.process import WorkerProcesses

_PROBE = "from gateway.cli import main; main(['probe', '--timeout', '0.5'])"
_EAGER = ("import gateway.app, gateway.process.supervisor, gateway.security.material; "
          + _PROBE)  # fmt: skip
_CLOSED = {"ONNXGATE_GRPC_PORT": "1"}


def _populated(multiprocess: bool) -> CollectorRegistry:
    """A gateway's families with the series of one model in service. multiprocess=True
    leaves out the process families, as in a worker (the supervisor reads them)."""
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, None, multiprocess=multiprocess)
    for version in ("1", "2"):
        for code in ("OK", "INVALID_ARGUMENT", "UNAVAILABLE"):
            metrics.requests.labels("credit", version, "primary", code).inc()
        metrics.request_duration.labels("credit", version, "primary").observe(0.001)
        for feature in range(30):
            labels = ("credit", version, f"input[{feature}]")
            for gauge in (metrics.drift_psi, metrics.drift_ks, metrics.drift_state,
                          metrics.drift_missing_rate, metrics.drift_out_of_range):  # fmt: skip
                gauge.labels(*labels).set(0.1)
    return registry


def _per_call(action: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        action()
    return (time.perf_counter() - started) / calls


def _wall(script: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], env={**os.environ, **_CLOSED},
                   stdout=subprocess.DEVNULL, check=False)  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200, help="scrapes per round")
    parser.add_argument("--workers", type=int, default=4, help="processes for the supervisor")
    args = parser.parse_args()

    with_process, without = _populated(False), _populated(True)
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
                for _ in range(args.workers)]  # fmt: skip
    supervisor = CollectorRegistry()
    supervisor.register(WorkerProcesses(lambda: {str(i): p.pid for i, p in enumerate(sleepers)}))
    rows: dict[str, list[float]] = {"scrape without": [], "scrape with": [], "workers": [],
                                    "probe lazy": [], "probe eager": []}  # fmt: skip
    try:
        for _ in range(args.rounds):
            rows["scrape without"].append(_per_call(lambda: generate_latest(without), args.calls))
            rows["scrape with"].append(_per_call(lambda: generate_latest(with_process), args.calls))
            rows["workers"].append(_per_call(lambda: generate_latest(supervisor), args.calls))
            rows["probe eager"].append(_wall(_EAGER))
            rows["probe lazy"].append(_wall(_PROBE))
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
    median = {name: statistics.median(values) for name, values in rows.items()}
    print(f"{args.rounds} rounds, medians; {os.cpu_count()} CPUs")
    print(f"scrape, one model's series: {median['scrape without'] * 1e6:.0f} us without the"
          f" process families, {median['scrape with'] * 1e6:.0f} us with"
          f" (+{(median['scrape with'] - median['scrape without']) * 1e6:.0f} us;"
          f" rounds {_span(rows['scrape with'], 1e6)} us)")  # fmt: skip
    print(f"supervisor, process families of itself and {args.workers} workers:"
          f" {median['workers'] * 1e6:.0f} us a scrape"
          f" ({median['workers'] * 1e6 / (args.workers + 1):.0f} us a process)")  # fmt: skip
    print(f"onnxgate probe: {median['probe lazy'] * 1e3:.0f} ms"
          f" (rounds {_span(rows['probe lazy'], 1e3)} ms) against"
          f" {median['probe eager'] * 1e3:.0f} ms with the serving imports"
          f" (rounds {_span(rows['probe eager'], 1e3)} ms):"
          f" {median['probe eager'] / median['probe lazy']:.1f}x")  # fmt: skip


def _span(values: list[float], scale: float) -> str:
    return f"{min(values) * scale:.0f}-{max(values) * scale:.0f}"


if __name__ == "__main__":
    main()
