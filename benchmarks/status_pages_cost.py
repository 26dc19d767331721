"""What a status page viewer costs the inference path: interleaved A/B on one gateway under
perf_analyzer, with nobody looking (A) and with a viewer loading the overview, the model page
and the rollout page every second (B).

One gateway (`onnxgate serve`, private registry, the tiny model, a 32-feature reference
profile so the model page computes drift) runs with --status-refresh-seconds (1 by default
here: while viewed, its status worker reads the registry every second, ten times the
gateway's default). Each round measures
A and B back to back, alternating which goes first. Reports per round the req/s of each, the
ratio B/A and its median, and the same for the CPU time the gateway's process group spent per
request answered (which other tenants' load moves far less than req/s).

The A/B cannot resolve a difference of a few percent on a shared machine, so the pages' parts
are also timed one by one, in CPU time on one thread against the same registry after the load:
the worker's readings and each page's rendering, and what one viewer costs a second from them.

    python benchmarks/status_pages_cost.py --rounds 5 --concurrency 8 --refresh-seconds 1
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_report import joined, scrape, total
from driver import alternate, csv_list, run_rounds
from load_tools import Run, add_perf_analyzer_args, measure_one
from models import build_repository
from round_stats import paired_ratios
from servers import HOST, group_cpu_seconds, port_pair, start_server

from gateway.status.detail import DetailReader
from gateway.status.overview import read_overview
from gateway.status.pages.html import page
from gateway.status.pages.model import model_body
from gateway.status.pages.overview import overview_body
from registry_client import RegistryClient
from registry_client.connection import private_redis_url
from registry_client.drift.reference import FeatureReference

MODEL = "tiny"
PAGES = ("/status", f"/status/models/{MODEL}", f"/status/models/{MODEL}/rollout")


class Viewer:
    """Loads every page once a second until stopped, as a browser tab refreshing would;
    counts the pages it got."""

    def __init__(self, metrics_port: int) -> None:
        self.pages = 0
        self._base = f"http://{HOST}:{metrics_port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._view, daemon=True)
        self._thread.start()

    def _view(self) -> None:
        while not self._stop.is_set():
            for path in PAGES:
                with urllib.request.urlopen(self._base + path, timeout=10) as response:
                    response.read()
                    self.pages += response.status == 200
            self._stop.wait(1.0)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.pages


def _reference(data_dir: Path) -> None:
    client = RegistryClient.from_url(private_redis_url(data_dir))
    training = np.random.default_rng(0).normal(size=(5_000, 32))
    references = {f"input[{i}]": FeatureReference.from_values(training[:, i]) for i in range(32)}
    client.drift.set_reference(MODEL, "1", {k: v for k, v in references.items() if v},
                               {"source": "benchmark"}, actor="benchmark")  # fmt: skip
    client.close()


def _thread_cpu_ms(action: Callable[[], object], calls: int) -> float:
    """The median CPU time of `action` on this thread, in ms (other threads not counted)."""
    spent = []
    for _ in range(calls):
        started = time.thread_time()
        action()
        spent.append((time.thread_time() - started) * 1000.0)
    return statistics.median(spent)


def _parts(url: str, calls: int) -> dict[str, float]:
    """What one refresh of the pages costs, part by part: the worker's readings of the
    registry and the renderings of each page from them."""
    client = RegistryClient.from_url(url)
    details = DetailReader(client)
    overview = read_overview(client)
    detail = details.read(MODEL)
    summary = next(m for m in overview.models if m.name == MODEL)
    found = {
        "overview reading": _thread_cpu_ms(lambda: read_overview(client), calls),
        "model detail reading": _thread_cpu_ms(lambda: details.read(MODEL), calls),
        "render overview": _thread_cpu_ms(
            lambda: page("Status", overview_body(overview), 10.0), calls
        ),
        "render model page": _thread_cpu_ms(
            lambda: page(MODEL, model_body(summary, detail), 10.0), calls
        ),
    }
    client.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=csv_list(int), default=[8])
    parser.add_argument("--ready-timeout", type=float, default=90.0)
    parser.add_argument("--refresh-seconds", type=float, default=1.0,
                        help="the gateway's --status-refresh-seconds")  # fmt: skip
    parser.add_argument("--calls", type=int, default=20, help="calls per part measured")
    add_perf_analyzer_args(parser, window_ms=3000)
    args = parser.parse_args()
    args.model = MODEL
    runs: list[Run] = []
    cpu_us: dict[tuple[int, str, int], float] = {}
    viewed_pages: list[int] = []
    with tempfile.TemporaryDirectory(prefix="pages-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        build_repository(work / "repo", [MODEL])
        port, metrics_port = port_pair()
        command = [str(args.onnxgate), "serve", "--models", str(work / "repo"), "--grpc-port",
                   str(port), "--metrics-port", str(metrics_port), "--host", HOST,
                   "--data-dir", str(work / "data"),
                   "--status-refresh-seconds", f"{args.refresh_seconds:g}"]  # fmt: skip
        proc = start_server(stack, None, command, work / "gateway.log", port, MODEL,
                            args.ready_timeout)  # fmt: skip
        _reference(work / "data")

        def measure(rnd: int, pos: int, item: tuple[int, str]) -> Run:
            concurrency, name = item
            viewer = Viewer(metrics_port) if name == "viewed" else None
            before = total(scrape(metrics_port), "onnxgate_requests_total", model=MODEL)
            spent = group_cpu_seconds(proc.pid)
            run = measure_one("perf_analyzer", args, port, concurrency, work)
            answered = total(scrape(metrics_port), "onnxgate_requests_total", model=MODEL) - before
            if answered > 0:
                cpu_us[rnd, name, concurrency] = (
                    (group_cpu_seconds(proc.pid) - spent) / answered * 1e6
                )
            if viewer is not None:
                viewed_pages.append(viewer.stop())
            run.server, run.repeat = name, rnd
            return run

        def plan(rnd: int) -> list[tuple[int, str]]:
            return [(c, n) for c in args.concurrency for n in alternate(["idle", "viewed"], rnd)]

        run_rounds(args.rounds, plan, measure, runs,
                   line=lambda r: f"round {r.repeat + 1} {r.server} c={r.concurrency}:"
                                  f" {r.rps} req/s, p99 {r.p99_ms} ms {r.error or ''}")  # fmt: skip
        parts = _parts(private_redis_url(work / "data"), args.calls)
    print(f"\npages served to the viewer per run: {viewed_pages}")
    print("\nCPU of the status pages' parts, on this process's thread, medians of"
          f" {args.calls} calls against the benchmark's registry after its load:\n")  # fmt: skip
    print("| part | CPU ms |\n| --- | ---: |")
    for name, milliseconds in parts.items():
        print(f"| {name} | {milliseconds:.2f} |")
    reading = parts["overview reading"] + parts["model detail reading"]
    rendering = sum(v for k, v in parts.items() if k.startswith("render"))
    per_second = reading / args.refresh_seconds + rendering / args.refresh_seconds
    print(
        f"\none viewer of every page, refreshing every {args.refresh_seconds:g} s:"
        f" {per_second:.2f} ms of CPU a second, {per_second / 10:.3f}% of one core"
    )
    for concurrency in args.concurrency:
        rps = {n: [r.rps or math.nan for r in runs if (r.server, r.concurrency) == (n, concurrency)]
               for n in ("idle", "viewed")}  # fmt: skip
        cpu = {n: [cpu_us.get((rnd, n, concurrency), math.nan) for rnd in range(args.rounds)]
               for n in ("idle", "viewed")}  # fmt: skip
        print(f"\nconcurrency {concurrency}:\n")
        print("| per round | idle | viewed | viewed / idle | median |")
        print("| --- | --- | --- | --- | ---: |")
        for what, values in (("req/s", rps), ("CPU us per request", cpu)):
            ratios = paired_ratios(values["idle"], values["viewed"])
            measured = [r for r in ratios if not math.isnan(r)]
            middle = f"{statistics.median(measured):.3f} of {len(measured)}" if measured else "-"
            idle, viewed = joined(values["idle"], ",.0f"), joined(values["viewed"], ",.0f")
            print(f"| {what} | {idle} | {viewed} | {joined(ratios, '.3f')} | {middle} |")


if __name__ == "__main__":
    main()
