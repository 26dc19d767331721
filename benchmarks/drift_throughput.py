"""Drift sketching cost: two gateways, input-drift sketching ON in one and OFF in the other.

Both gateways serve the same 30-feature tabular classifier (tabular30), pinned to the same
server CPU, each with its own private registry. The ON gateway sketches every served input row
(--drift-max-rows-per-second 0) against a reference profile (exact histograms on the
reference's bins, the full cost); the OFF gateway runs with --drift-buffer-rows 0. Each round
measures ON and OFF back to back with perf_analyzer, the order alternated per round to cancel
drift; ratios are taken within a round. After each run the rows sketched are read back from the
ON gateway's Redis and the rows dropped from its Prometheus counter: sketched + dropped must
equal the requests it answered OK.

    .venv/bin/python benchmarks/drift_throughput.py --repeats 6 --concurrency 32 \
        --pa-window-ms 3000 --out benchmarks/out/drift_throughput.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bench_report import failures_section, fmt, machine_line, scrape, total
from driver import (
    alternate,
    finish,
    load_average,
    run_identity,
    run_in_work_dir,
    run_rounds,
    start_run,
)
from load_tools import Run, add_perf_analyzer_args, measure_one
from models import build_tabular30
from round_stats import medians_of, round_ratios
from servers import (
    CLIENT_CPU,
    ROOT,
    SERVER_CPU,
    BenchError,
    GatewayProcess,
    check_alive,
    group_cpu_seconds,
    port_pair,
    run_bounded,
    server_command,
    start_server,
)

from gateway.settings import Settings
from registry_client.client import RegistryClient
from registry_client.connection import private_redis_url
from registry_client.errors import RegistryError

HERE = Path(__file__).resolve().parent
MODEL = "tabular30"
VERSION = "1"
FEATURES = 30
ACTOR = "benchmarks/drift_throughput.py"
REFERENCE_ROWS = 20000
REFERENCE_SEED = 0
# The ON gateway reloads reference bins and recomputes its gauges every MONITOR_S; faster would
# load CPU 0 while the OFF gateway is measured (about 2% at 1 s), favouring the ON side.
MONITOR_S = 20
BINS_WAIT_S = MONITOR_S + 1.0  # after the reference is set, its bins are loaded
SKETCH_POLL_S = 0.25
# Sketches are read back in minute windows, kept 2 h by default: read at most this far back.
MAX_SKETCH_LOOKBACK_S = 7000.0
GATEWAY_DEFAULTS = Settings()
MODES = ("on", "off")
LABELS = {"on": "drift on", "off": "drift off"}


def mode_flags(mode: str) -> list[str]:
    """The gateway flags that make a mode (besides server_command's and --gateway-args)."""
    if mode == "on":  # every row sketched (the full cost), a quicker refresh and write
        return ["--drift-monitor-seconds", str(MONITOR_S), "--drift-flush-seconds", "2",
                "--drift-max-rows-per-second", "0"]  # fmt: skip
    return ["--drift-buffer-rows", "0"]


@dataclass
class Gateway(GatewayProcess):
    """One gateway under test, how to reach it, and its private registry."""

    mode: str
    data_dir: Path
    registry: RegistryClient
    started: float  # time.time() when it was launched

    def check_alive(self) -> None:
        """Raise BenchError if the gateway has exited."""
        check_alive(self.proc, self.log, f"{LABELS[self.mode]} gateway")


@dataclass
class Counts:
    """What one gateway has counted so far: requests, drift rows and CPU time."""

    ok: float = 0.0
    failed: float = 0.0
    dropped: float = 0.0  # onnxgate_sketch_dropped_total
    sketched: int = 0  # rows in the registry's sketches
    cpu_s: float = 0.0  # user + system time of its process group (gateway and redis-server)


@dataclass
class Measurement:
    """One mode measured once: perf_analyzer's numbers and the gateways' counter deltas."""

    mode: str
    round: int
    position: int
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    run_s: float | None = None  # perf_analyzer's whole run, retries included
    requests_ok: int | None = None
    requests_failed: int | None = None
    rows_sketched: int | None = None
    rows_dropped: int | None = None
    exact_histograms: int | None = None  # features whose sketch counts the reference bins
    sketch_wait_s: float | None = None  # after perf_analyzer ended, until the rows were written
    cpu_us_per_request: float | None = None  # the measured gateway's process group
    idle_gateway_cpu_s: float | None = None  # the other gateway, idle meanwhile, same CPU
    error: str | None = None

    @property
    def idle_gateway_share(self) -> float | None:
        """The idle gateway's CPU time as a share of the run's wall time."""
        if self.idle_gateway_cpu_s is None or not self.run_s:
            return None
        return self.idle_gateway_cpu_s / self.run_s

    @property
    def rows_accounted(self) -> bool | None:
        """Sketched + dropped == answered OK (ON); nothing sketched (OFF)."""
        if self.rows_sketched is None or self.rows_dropped is None or self.requests_ok is None:
            return None
        if self.mode == "off":
            return self.rows_sketched == 0 and self.rows_dropped == 0
        return self.rows_sketched + self.rows_dropped == self.requests_ok


def sketch_lookback(gateway: Gateway) -> float:
    """How far back to read sketches to cover everything since the gateway started."""
    return min(time.time() - gateway.started + 120.0, MAX_SKETCH_LOOKBACK_S)


def read_sketches(gateway: Gateway) -> tuple[int, int]:
    """(rows, features with an exact histogram on the reference bins) in the registry."""
    try:
        merged = gateway.registry.drift.read(MODEL, VERSION, sketch_lookback(gateway))
    except RegistryError as err:
        raise BenchError(f"{LABELS[gateway.mode]}: reading sketches failed: {err}") from err
    exact = sum(1 for s in merged.features.values() if s.histogram is not None)
    return merged.rows, exact


def read_counts(gateway: Gateway) -> Counts:
    """The gateway's request and drift counters and its CPU time now."""
    samples = scrape(gateway.metrics_port)
    requests = "onnxgate_requests_total"
    ok = total(samples, requests, model=MODEL, role="primary", code="OK")
    everything = total(samples, requests, model=MODEL, role="primary")
    dropped = total(samples, "onnxgate_sketch_dropped_total", model=MODEL)
    rows, _ = read_sketches(gateway)
    return Counts(ok, everything - ok, dropped, rows, group_cpu_seconds(gateway.proc.pid))


def build_repo(repo: Path) -> None:
    """REPO/tabular30/1/model.onnx."""
    build_tabular30(repo / MODEL / VERSION / "model.onnx")


def start_gateway(
    mode: str,
    args: argparse.Namespace,
    work: Path,
    taken: set[int],
    stack: contextlib.ExitStack,
) -> Gateway:
    """Start one gateway pinned to the server CPU and connect to its private registry.

    server_command puts the gateway's --data-dir next to the repository, so each mode gets its
    own directory (and its own redis-server): WORK/<mode>/{repo,gateway-data}."""
    home = work / mode
    repo = home / "repo"
    build_repo(repo)
    port, metrics_port = port_pair(taken)
    log = work / f"gateway_{mode}.log"
    cmd = [*server_command("gateway", args, repo, port, metrics_port), *mode_flags(mode)]
    started = time.time()
    proc = start_server(stack, f"{LABELS[mode]} gateway", cmd, log, port, MODEL, args.ready_timeout)
    data_dir = home / "gateway-data"
    registry = RegistryClient.from_url(private_redis_url(data_dir))
    stack.callback(registry.close)
    return Gateway(port, metrics_port, proc, log, mode, data_dir, registry, started)


def set_reference(gateway: Gateway, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Write seeded standard-normal training data and make it the version's reference with
    gatectl, then give the gateway's drift monitor time to load the bins."""
    data = np.random.default_rng(REFERENCE_SEED).standard_normal((REFERENCE_ROWS, FEATURES))
    path = work / "reference.npy"
    np.save(path, data.astype(np.float32))
    cmd = [str(args.gatectl), "--data-dir", str(gateway.data_dir), "--actor", ACTOR]
    cmd += ["reference", "set", MODEL, VERSION, "--data", str(path)]
    print(f"== reference: {shlex.join(cmd)}", flush=True)
    out = run_bounded("gatectl reference set", cmd, 120.0, dict(os.environ), work).strip()
    if out:
        print(f"   {out.splitlines()[0]}", flush=True)  # the summary line; features follow
    try:
        features = gateway.registry.drift.get_reference(MODEL, VERSION)
    except RegistryError as err:
        raise BenchError(f"reference not readable after gatectl: {err}") from err
    if len(features) != FEATURES:
        raise BenchError(f"reference has {len(features)} features, expected {FEATURES}")
    time.sleep(BINS_WAIT_S)
    gateway.check_alive()
    return {
        "rows": REFERENCE_ROWS,
        "features": len(features),
        "seed": REFERENCE_SEED,
        "command": shlex.join(cmd),
    }


def wait_sketched(
    gateway: Gateway, before: Counts, expected: int, timeout_s: float
) -> tuple[int, int, float]:
    """Poll the registry until `expected` more rows are sketched than before (or timeout_s).
    Returns (rows sketched since `before`, features with exact histograms, seconds waited)."""
    started = time.monotonic()
    while True:
        gateway.check_alive()
        rows, exact = read_sketches(gateway)
        waited = time.monotonic() - started
        if rows - before.sketched >= expected or waited >= timeout_s:
            return rows - before.sketched, exact, waited
        time.sleep(SKETCH_POLL_S)


def measure_mode(
    gateways: dict[str, Gateway], mode: str, args: argparse.Namespace, work: Path, rnd: int,
    pos: int,
) -> Measurement:  # fmt: skip
    """Measure one gateway once; a perf_analyzer failure is recorded, a dead gateway raises."""
    gateway = gateways[mode]
    idle = gateways["off" if mode == "on" else "on"]
    result = Measurement(mode, rnd, pos)
    gateway.check_alive()
    idle.check_alive()
    before = read_counts(gateway)
    idle_before = group_cpu_seconds(idle.proc.pid)
    started = time.monotonic()
    run: Run = measure_one("perf_analyzer", args, gateway.port, args.concurrency, work)
    result.run_s = time.monotonic() - started
    idle_cpu_s = group_cpu_seconds(idle.proc.pid) - idle_before
    after = read_counts(gateway)  # CPU and request counters right as the load ended
    result.rps, result.p50_ms, result.p99_ms = run.rps, run.p50_ms, run.p99_ms
    result.error = run.error
    result.requests_ok = round(after.ok - before.ok)
    result.requests_failed = round(after.failed - before.failed)
    result.idle_gateway_cpu_s = idle_cpu_s
    if result.requests_ok:
        result.cpu_us_per_request = (after.cpu_s - before.cpu_s) / result.requests_ok * 1e6
    if mode == "on":
        # The flusher writes every 2 s; rows dropped are counted at once, on the request path.
        dropped = round(after.dropped - before.dropped)
        expected = result.requests_ok - dropped
        rows, exact, waited = wait_sketched(gateway, before, expected, args.sketch_timeout)
        result.rows_sketched, result.exact_histograms, result.sketch_wait_s = rows, exact, waited
        result.rows_dropped = round(read_counts(gateway).dropped - before.dropped)
        if rows < expected:
            note = f"{rows:,} rows sketched after {waited:.1f} s, expected {expected:,}"
            result.error = f"{result.error}; {note}" if result.error else note
    else:
        result.rows_sketched = after.sketched - before.sketched
        result.rows_dropped = round(after.dropped - before.dropped)
    return result


def describe(m: Measurement) -> str:
    """One progress line."""
    head = f"{LABELS[m.mode]:9s} " + (f"#{m.round}" if m.round else "warm-up")
    if m.rps is None:
        return f"{head}: FAILED: {m.error}"
    text = f"{head}: {m.rps:9.1f} req/s  p50 {m.p50_ms:.3f} ms  p99 {m.p99_ms:.3f} ms"
    text += f"  OK {m.requests_ok} failed {m.requests_failed}"
    text += f"  CPU {fmt(m.cpu_us_per_request, '.0f')} us/req"
    text += f" (idle gateway {fmt(m.idle_gateway_share, '.1%')} of a CPU)"
    if m.mode == "on":
        text += (
            f"  sketched {m.rows_sketched} dropped {m.rows_dropped}"
            f" exact histograms {m.exact_histograms}/{FEATURES}"
            f" (written within {fmt(m.sketch_wait_s, '.1f')} s)"
        )
    else:
        text += f"  sketched {m.rows_sketched}"
    return f"{text}  ({m.error})" if m.error else text


def order_text(rnd: int) -> str:
    """The modes in round `rnd`'s order (0-based), e.g. "on/off": ON first in even rounds."""
    return "/".join(alternate(MODES, rnd))


def summarize(measurements: list[Measurement]) -> dict[str, Any]:
    """Medians per mode and within-round ON/OFF ratios."""
    per_mode: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        ok = [m for m in measurements if m.mode == mode and m.rps is not None]
        medians = medians_of(ok, "rps", "p50_ms", "p99_ms", "cpu_us_per_request")
        per_mode[mode] = {"label": LABELS[mode], "flags": shlex.join(mode_flags(mode)), **medians}
    wanted = {"on_over_off_rps": ("on", "off", "rps"), "on_over_off_p99": ("on", "off", "p99_ms")}
    rounds, ratios = round_ratios(measurements, "mode", wanted, order_text)
    return {"modes": per_mode, "rounds": rounds, "ratio_medians": ratios}


def report(
    args: argparse.Namespace,
    env: dict[str, Any],
    summary: dict[str, Any],
    measurements: list[Measurement],
    failures: list[str],
) -> str:
    """Render the Markdown report."""
    reference = env.get("reference") or {}
    lines = [
        f"# Drift sketching cost: {MODEL} model ({FEATURES} features), batch 1,"
        f" concurrency {args.concurrency}",
        "",
        "Two gateway processes on the same CPU, each with its own private registry: drift"
        " sketching ON (defaults, --drift-buffer-rows"
        f" {GATEWAY_DEFAULTS.drift_buffer_rows}, plus {shlex.join(mode_flags('on'))}) and OFF"
        f" ({shlex.join(mode_flags('off'))}). The ON gateway's version has a reference profile"
        f" ({reference.get('rows', REFERENCE_ROWS):,} seeded standard-normal rows, set with"
        " gatectl before measuring), so it also counts exact histograms on the reference bins."
        f" After {args.warmup_runs} discarded warm-up run(s) of each, each round measures ON"
        " and OFF back to back, the order alternated per round; medians over"
        f" {args.repeats} round(s); ratios are taken within a round, then their median"
        " reported.",
        "",
        f"Command: `{env['command']}`",
        "",
        machine_line(env)
        + f" Both gateways (and their redis-servers) on CPU {SERVER_CPU}, perf_analyzer on CPU"
        f" {CLIENT_CPU}, loopback; perf_analyzer -b 1 --concurrency-range {args.concurrency}"
        f" -p {args.pa_window_ms} --max-trials {args.pa_max_trials} --stability-percentage"
        f" {args.pa_stability}"
        + (f"; gateway flags for both: {args.gateway_args}" if args.gateway_args else "")
        + f". Load average (1/5/15 min) at start {env['loadavg_start']},"
        f" at end {env.get('loadavg_end')}.",
        "",
        "| mode | flags | n | req/s (median) | p50 ms | p99 ms (median) | CPU us/request |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary["modes"].values():
        lines.append(
            f"| {row['label']} | `{row['flags']}` | {row['n']} | {fmt(row['rps'], ',.0f')}"
            f" | {fmt(row['p50_ms'], '.2f')} | {fmt(row['p99_ms'], '.2f')}"
            f" | {fmt(row['cpu_us_per_request'], '.0f')} |"
        )
    med = summary["ratio_medians"]
    lines += [
        "",
        "ON/OFF ratios within each round (median first row):",
        "",
        "| round | order | on/off req/s | on/off p99 |",
        "| --- | --- | ---: | ---: |",
        f"| median | | {fmt(med['on_over_off_rps'], '.3f')}"
        f" | {fmt(med['on_over_off_p99'], '.3f')} |",
    ]
    for r in summary["rounds"]:
        lines.append(
            f"| {r['round']} | {r['order']} | {fmt(r['on_over_off_rps'], '.3f')}"
            f" | {fmt(r['on_over_off_p99'], '.3f')} |"
        )
    lines += [
        "",
        "Counted by each gateway during each whole perf_analyzer run (all its trial windows):"
        " requests from its Prometheus counters, rows sketched from the sketches its registry"
        " holds (waited for after the run: the ON gateway writes every 2 s), rows dropped from"
        " onnxgate_sketch_dropped_total (a full drift buffer drops rows on the request path)."
        " For ON, sketched + dropped should equal the requests answered OK, and every feature"
        f" should have an exact histogram ({FEATURES}/{FEATURES}); OFF should sketch nothing."
        " CPU is user + system time of the measured gateway's process group (gateway and its"
        " redis-server) per request answered; the idle gateway's CPU time during the run, as a"
        " share of the run's wall time, is background load on the same CPU (the ON gateway"
        " refreshes its drift gauges every second).",
        "",
        "| mode | round | req/s | p99 ms | requests OK | failed | rows sketched | rows dropped"
        " | dropped % | all rows accounted | exact histograms | CPU us/request"
        " | idle gateway CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: "
        "| ---: |",
    ]
    for m in sorted(measurements, key=lambda m: (MODES.index(m.mode), m.round)):
        n = m.requests_ok
        dropped = (m.rows_dropped or 0) / n if n and m.rows_dropped is not None else None
        accounted = {None: "-", True: "yes", False: "NO"}[m.rows_accounted]
        exact = "-" if m.exact_histograms is None else f"{m.exact_histograms}/{FEATURES}"
        lines.append(
            f"| {LABELS[m.mode]} | {m.round} | {fmt(m.rps, ',.0f')} | {fmt(m.p99_ms, '.2f')}"
            f" | {fmt(n, ',')} | {fmt(m.requests_failed, ',')} | {fmt(m.rows_sketched, ',')}"
            f" | {fmt(m.rows_dropped, ',')} | {fmt(dropped, '.2%')} | {accounted} | {exact}"
            f" | {fmt(m.cpu_us_per_request, '.0f')} | {fmt(m.idle_gateway_share, '.1%')} |"
        )
    lines += failures_section(failures)
    return "\n".join(lines) + "\n"


def as_json(m: Measurement) -> dict[str, Any]:
    """A measurement with its derived fields."""
    derived = {"rows_accounted": m.rows_accounted, "idle_gateway_share": m.idle_gateway_share}
    return asdict(m) | derived


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=6, help="rounds of ON and OFF")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument(
        "--warmup-runs", type=int, default=1,
        help="discarded runs of each gateway before round 1 (ON then OFF)",
    )  # fmt: skip
    add_perf_analyzer_args(p, window_ms=3000)
    p.add_argument("--gatectl", type=Path, default=ROOT / ".venv" / "bin" / "gatectl")
    p.add_argument("--gateway-args", default="", help="extra flags for both onnxgate serve")
    p.add_argument("--ready-timeout", type=float, default=60.0)
    p.add_argument(
        "--sketch-timeout", type=float, default=12.0,
        help="wait this long after an ON run for its rows to be written (s)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=HERE / "out" / "drift_throughput.md")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.concurrency < 1 or args.warmup_runs < 0:
        p.error("--repeats and --concurrency must be >= 1, --warmup-runs >= 0")
    args.model = MODEL  # load_tools' perf_analyzer and servers' gateway command read it
    return args


def progress(m: Measurement) -> str:
    """describe(m), indented under its round."""
    return f"   {describe(m)}"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = parse_args(argv)
    env = start_run() | run_identity()
    measurements: list[Measurement] = []
    warmups: list[Measurement] = []
    failures: list[str] = []

    def measure(work: Path) -> None:
        with contextlib.ExitStack() as stack:
            taken: set[int] = set()
            gateways = {mode: start_gateway(mode, args, work, taken, stack) for mode in MODES}
            env["reference"] = set_reference(gateways["on"], args, work)
            if args.warmup_runs:
                print(f"\n== warm-up: {args.warmup_runs} run(s) of each, discarded", flush=True)

            def warm_up(rnd: int, pos: int, mode: str) -> Measurement:
                return measure_mode(gateways, mode, args, work, 0, pos)

            def one(rnd: int, pos: int, mode: str) -> Measurement:
                return measure_mode(gateways, mode, args, work, rnd + 1, pos)

            run_rounds(args.warmup_runs, lambda rnd: MODES, warm_up, warmups, line=progress)
            run_rounds(args.repeats, lambda rnd: alternate(MODES, rnd), one, measurements,
                       lambda rnd: f"\n== round {rnd + 1}: {' then '.join(alternate(MODES, rnd))}",
                       progress)  # fmt: skip

    run_in_work_dir("onnxgate-drift-throughput-", args.keep_work, measure, failures, (BenchError,))
    env["loadavg_end"] = load_average()
    failures += [f"{LABELS[m.mode]} round {m.round}: {m.error}" for m in measurements if m.error]
    failures += [
        f"{LABELS[m.mode]} round {m.round}: rows not accounted for (sketched"
        f" {m.rows_sketched}, dropped {m.rows_dropped}, requests OK {m.requests_ok})"
        for m in measurements
        if m.rows_accounted is False and not m.error
    ]
    summary = summarize(measurements)
    text = report(args, env, summary, measurements, failures)
    return finish(
        args, env, text, failures,
        modes={mode: {"label": LABELS[mode], "flags": mode_flags(mode)} for mode in MODES},
        summary=summary,
        measurements=[as_json(m) for m in measurements],
        warmups=[as_json(m) for m in warmups],
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
