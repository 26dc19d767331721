"""Canary and shadow cost: one gateway, its rule changed live between three configurations.

(a) one version (1=100), (b) a 90/10 split (1=90, 2=10), (c) the 90/10 split plus a 100%
shadow of version 3. Each round measures (a), (b), (c) back to back with perf_analyzer, the
start order rotated per round to cancel drift; ratios are taken within a round. Shadow copies
run and dropped in (c) are read from the gateway's Prometheus counters before and after.

    .venv/bin/python benchmarks/canary_shadow.py --repeats 4 --concurrency 32 \
        --pa-window-ms 3000 --out benchmarks/out/canary_shadow.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_report import failures_section, fmt, machine_line, scrape, total, wait_serving
from driver import (
    finish,
    load_average,
    rotate,
    run_identity,
    run_in_work_dir,
    run_rounds,
    start_run,
)
from load_tools import Run, add_perf_analyzer_args, measure_one
from models import build_tiny
from round_stats import medians_of, round_ratios
from servers import (
    CLIENT_CPU,
    SERVER_CPU,
    BenchError,
    GatewayProcess,
    port_pair,
    server_command,
    start_server,
)

from gateway.settings import Settings
from registry_client.client import RegistryClient
from registry_client.connection import private_redis_url
from registry_client.errors import RegistryError
from registry_client.records.rule_documents import Shadow, Split

HERE = Path(__file__).resolve().parent
MODEL = "tiny"
VERSIONS = ("1", "2", "3")
ACTOR = "benchmarks/canary_shadow.py"
POLL_S = 0.02
DRAIN_POLL_S = 0.1
DRAIN_STABLE_S = 1.0
GATEWAY_DEFAULTS = Settings()


@dataclass(frozen=True)
class Config:
    """One routing configuration under test."""

    key: str
    label: str
    split: tuple[Split, ...]
    shadows: tuple[Shadow, ...] = ()

    @property
    def rule(self) -> str:
        """The rule as gatectl would spell it."""
        text = "split " + ",".join(f"{s.version}={s.weight}" for s in self.split)
        if self.shadows:
            text += "; shadow " + ",".join(f"{s.version}={s.percent:g}" for s in self.shadows)
        return text


CONFIGS = (
    Config("a", "one version", (Split("1", 100),)),
    Config("b", "90/10 split", (Split("1", 90), Split("2", 10))),
    Config(
        "c", "90/10 split + 100% shadow", (Split("1", 90), Split("2", 10)), (Shadow("3", 100.0),)
    ),
)
BY_KEY = {c.key: c for c in CONFIGS}


@dataclass
class Counts:
    """Request counters of the model, as scraped from the metrics endpoint."""

    primary_ok: dict[str, float] = field(default_factory=dict)  # by version
    primary_failed: float = 0.0
    shadow_ok: float = 0.0
    shadow_failed: float = 0.0
    shadow_dropped: float = 0.0

    @property
    def mirrored(self) -> float:
        """Shadow copies offered: run (ok or failed) plus dropped."""
        return self.shadow_ok + self.shadow_failed + self.shadow_dropped

    def minus(self, before: Counts) -> Counts:
        """The increase since `before`."""
        versions = set(self.primary_ok) | set(before.primary_ok)
        return Counts(
            {v: self.primary_ok.get(v, 0.0) - before.primary_ok.get(v, 0.0) for v in versions},
            self.primary_failed - before.primary_failed,
            self.shadow_ok - before.shadow_ok,
            self.shadow_failed - before.shadow_failed,
            self.shadow_dropped - before.shadow_dropped,
        )


@dataclass
class Measurement:
    """One configuration measured once: perf_analyzer's numbers and the counter deltas."""

    config: str
    round: int
    position: int
    revision: int | None = None
    apply_s: float | None = None  # set_route returning -> the gateway serving the rule
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    primary_ok: dict[str, int] = field(default_factory=dict)
    primary_failed: int | None = None
    shadow_ok: int | None = None
    shadow_failed: int | None = None
    shadow_dropped: int | None = None
    drain_s: float | None = None  # after perf_analyzer ended, until the shadow queue was empty
    error: str | None = None

    @property
    def primary_total(self) -> int:
        """Primary requests answered OK during the whole perf_analyzer run."""
        return sum(self.primary_ok.values())


@dataclass
class Gateway(GatewayProcess):
    """The gateway under test, how to reach it, and its private registry."""

    registry: RegistryClient


def read_counts(metrics_port: int) -> Counts:
    """The model's primary and shadow counters now."""
    samples = scrape(metrics_port)
    requests = "onnxgate_requests_total"
    primary_ok = {
        labels["version"]: value
        for name, labels, value in samples
        if name == requests
        and labels.get("model") == MODEL
        and labels.get("role") == "primary"
        and labels.get("code") == "OK"
    }
    primary_all = total(samples, requests, model=MODEL, role="primary")
    shadow_all = total(samples, requests, model=MODEL, role="shadow")
    shadow_ok = total(samples, requests, model=MODEL, role="shadow", code="OK")
    return Counts(
        primary_ok,
        primary_all - sum(primary_ok.values()),
        shadow_ok,
        shadow_all - shadow_ok,
        total(samples, "onnxgate_shadow_dropped_total", model=MODEL),
    )


def build_repo(repo: Path) -> None:
    """REPO/tiny/{1,2,3}/model.onnx, all the same tiny model."""
    for version in VERSIONS:
        build_tiny(repo / MODEL / version / "model.onnx")


def gateway_command(
    args: argparse.Namespace, repo: Path, port: int, metrics_port: int
) -> list[str]:
    """server_command's gateway (private registry in the run's directory) plus the shadow
    settings."""
    cmd = server_command("gateway", args, repo, port, metrics_port)
    cmd += ["--shadow-queue-size", str(args.shadow_queue_size)]
    return [*cmd, "--shadow-workers", str(args.shadow_workers)]


def start_gateway(args: argparse.Namespace, work: Path, stack: contextlib.ExitStack) -> Gateway:
    """Start the gateway pinned to the server CPU and connect to its private registry."""
    repo = work / "repo"
    port, metrics_port = port_pair()
    log = work / "gateway.log"
    cmd = gateway_command(args, repo, port, metrics_port)
    proc = start_server(stack, "gateway", cmd, log, port, MODEL, args.ready_timeout)
    # server_command puts the gateway's --data-dir next to the repository.
    registry = RegistryClient.from_url(private_redis_url(work / "gateway-data"))
    stack.callback(registry.close)
    return Gateway(port, metrics_port, proc, log, registry)


def apply_rule(gateway: Gateway, config: Config, args: argparse.Namespace) -> tuple[int, float]:
    """Set the rule (compare-and-set on the current revision), wait until the gateway serves
    it, then let it settle. Returns (revision, seconds until applied)."""
    try:
        current = gateway.registry.get_route(MODEL)
        rule = gateway.registry.set_route(
            MODEL,
            config.split,
            config.shadows,
            actor=ACTOR,
            reason=f"benchmark configuration ({config.key}) {config.label}",
            expected_revision=0 if current is None else current.revision,
        )
    except RegistryError as err:
        raise BenchError(f"setting rule ({config.key}) failed: {err}") from err
    applied, serving = wait_serving(gateway.metrics_port, MODEL, rule.revision,
                                    args.apply_timeout, POLL_S, gateway.check_alive)  # fmt: skip
    if applied is not None:
        time.sleep(args.settle_s)
        return rule.revision, applied
    try:
        status = json.dumps(gateway.registry.replica_status(MODEL))
    except RegistryError as err:
        status = f"rollout status unavailable: {err}"
    raise BenchError(
        f"rule ({config.key}) revision {rule.revision} not applied after "
        f"{args.apply_timeout:.0f} s (serving {serving:.0f}): {status}"
    )


def wait_drained(gateway: Gateway, before: Counts, timeout_s: float) -> tuple[Counts, float]:
    """Counter deltas once every shadow copy offered has run or been dropped.

    With a 100% shadow every OK primary offers one copy, so done = mirrored >= primary; for
    lower percentages (or none) done = no change for DRAIN_STABLE_S."""
    started = time.monotonic()
    last_change, last_mirrored = started, -1.0
    while True:
        delta = read_counts(gateway.metrics_port).minus(before)
        now = time.monotonic()
        if delta.mirrored != last_mirrored:
            last_change, last_mirrored = now, delta.mirrored
        full = delta.mirrored > 0 and delta.mirrored >= sum(delta.primary_ok.values())
        if full or now - last_change >= DRAIN_STABLE_S or now - started >= timeout_s:
            return delta, now - started
        time.sleep(DRAIN_POLL_S)


def measure_config(
    gateway: Gateway, config: Config, args: argparse.Namespace, work: Path, rnd: int, pos: int
) -> Measurement:
    """Switch the rule to `config` and measure it once; a perf_analyzer failure is recorded."""
    result = Measurement(config.key, rnd, pos)
    try:
        result.revision, result.apply_s = apply_rule(gateway, config, args)
    except BenchError as err:
        gateway.check_alive()  # a dead gateway ends the run; a rule not applied is recorded
        result.error = str(err)
        return result
    before = read_counts(gateway.metrics_port)
    run: Run = measure_one("perf_analyzer", args, gateway.port, args.concurrency, work)
    delta, result.drain_s = wait_drained(gateway, before, args.drain_timeout)
    result.rps, result.p50_ms, result.p99_ms = run.rps, run.p50_ms, run.p99_ms
    result.error = run.error
    result.primary_ok = {v: round(n) for v, n in sorted(delta.primary_ok.items()) if n}
    result.primary_failed = round(delta.primary_failed)
    result.shadow_ok = round(delta.shadow_ok)
    result.shadow_failed = round(delta.shadow_failed)
    result.shadow_dropped = round(delta.shadow_dropped)
    return result


def describe(m: Measurement) -> str:
    """One progress line."""
    head = f"({m.config}) #{m.round} rev {m.revision} applied in {m.apply_s or 0:.2f} s"
    if m.rps is None:
        return f"{head}: FAILED: {m.error}"
    text = f"{head}: {m.rps:9.1f} req/s  p50 {m.p50_ms:.3f} ms  p99 {m.p99_ms:.3f} ms"
    text += f"  primary {m.primary_ok} failed {m.primary_failed}"
    if BY_KEY[m.config].shadows:
        text += (
            f"  shadow ok {m.shadow_ok} failed {m.shadow_failed} dropped {m.shadow_dropped}"
            f" (drained in {m.drain_s:.2f} s)"
        )
    return text


def summarize(measurements: list[Measurement]) -> dict[str, Any]:
    """Medians per configuration and within-round ratios."""
    per_config: dict[str, dict[str, Any]] = {}
    for config in CONFIGS:
        ok = [m for m in measurements if m.config == config.key and m.rps is not None]
        medians = medians_of(ok, "rps", "p50_ms", "p99_ms")
        per_config[config.key] = {"label": config.label, "rule": config.rule, **medians}
    wanted = {
        "b_over_a_rps": ("b", "a", "rps"),
        "b_over_a_p99": ("b", "a", "p99_ms"),
        "c_over_b_rps": ("c", "b", "rps"),
        "c_over_b_p99": ("c", "b", "p99_ms"),
    }
    rounds, ratios = round_ratios(measurements, "config", wanted, order_keys)
    return {"configs": per_config, "rounds": rounds, "ratio_medians": ratios}


def order_keys(rnd: int) -> str:
    """The configurations' keys in round `rnd`'s order (0-based), e.g. "bca"."""
    return "".join(c.key for c in rotate(CONFIGS, rnd))


def report(
    args: argparse.Namespace,
    env: dict[str, Any],
    summary: dict[str, Any],
    measurements: list[Measurement],
    failures: list[str],
) -> str:
    """Render the Markdown report."""
    load = (f"{args.request_rate} requests/s" if args.request_rate
            else f"concurrency {args.concurrency}")  # fmt: skip
    lines = [
        f"# Canary and shadow cost: {MODEL} model, batch 1, {load}",
        "",
        "One gateway process; its routing rule changed live through the registry between"
        " configurations. Each round measures (a), (b), (c) back to back, the start order"
        f" rotated per round; medians over {args.repeats} round(s); ratios are taken within"
        " a round, then their median reported.",
        "",
        f"Command: `{env['command']}`",
        "",
        machine_line(env)
        + f" Gateway on CPU {SERVER_CPU}, perf_analyzer on CPU {CLIENT_CPU}, loopback;"
        f" perf_analyzer -p {args.pa_window_ms} --max-trials {args.pa_max_trials}"
        f" --stability-percentage {args.pa_stability}. Gateway: --shadow-queue-size"
        f" {args.shadow_queue_size} --shadow-workers {args.shadow_workers}"
        + (f" {args.gateway_args}" if args.gateway_args else "")
        + f"; {args.settle_s:g} s settle after each rule is applied."
        f" Load average (1/5/15 min) at start {env['loadavg_start']},"
        f" at end {env.get('loadavg_end')}.",
        "",
        "| config | rule | n | req/s (median) | p50 ms | p99 ms (median) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for key, row in summary["configs"].items():
        lines.append(
            f"| ({key}) {row['label']} | {row['rule']} | {row['n']} | {fmt(row['rps'], ',.0f')}"
            f" | {fmt(row['p50_ms'], '.2f')} | {fmt(row['p99_ms'], '.2f')} |"
        )
    med = summary["ratio_medians"]
    lines += [
        "",
        "Ratios within each round (median first row):",
        "",
        "| round | order | b/a req/s | c/b p99 | c/b req/s | b/a p99 |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        f"| median | | {fmt(med['b_over_a_rps'], '.3f')} | {fmt(med['c_over_b_p99'], '.3f')}"
        f" | {fmt(med['c_over_b_rps'], '.3f')} | {fmt(med['b_over_a_p99'], '.3f')} |",
    ]
    for r in summary["rounds"]:
        lines.append(
            f"| {r['round']} | {r['order']} | {fmt(r['b_over_a_rps'], '.3f')}"
            f" | {fmt(r['c_over_b_p99'], '.3f')} | {fmt(r['c_over_b_rps'], '.3f')}"
            f" | {fmt(r['b_over_a_p99'], '.3f')} |"
        )
    lines += [
        "",
        "Requests counted by the gateway during each whole perf_analyzer run (all its trial"
        " windows, from the Prometheus counters before and after; shadow copies still queued"
        " when perf_analyzer ended were waited for). Version 2 share should be ~10% in (b)"
        " and (c); in (c) shadow run + dropped should equal the primary count.",
        "",
        "| config | round | req/s | p99 ms | primary OK | v2 share | primary failed"
        " | shadow run OK | shadow failed | shadow dropped | dropped % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in sorted(measurements, key=lambda m: (m.config, m.round)):
        n = m.primary_total
        share = m.primary_ok.get("2", 0) / n if n else None
        dropped = (m.shadow_dropped or 0) / n if n and BY_KEY[m.config].shadows else None
        lines.append(
            f"| ({m.config}) | {m.round} | {fmt(m.rps, ',.0f')} | {fmt(m.p99_ms, '.2f')}"
            f" | {n:,} | {fmt(share, '.1%')} | {fmt(m.primary_failed, ',')}"
            f" | {fmt(m.shadow_ok, ',')} | {fmt(m.shadow_failed, ',')}"
            f" | {fmt(m.shadow_dropped, ',')} | {fmt(dropped, '.1%')} |"
        )
    lines += failures_section(failures)
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=4, help="rounds of (a), (b), (c)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument(
        "--request-rate", type=int, default=None,
        help="send this many requests/s instead of a fixed concurrency (spare-capacity runs)",
    )  # fmt: skip
    add_perf_analyzer_args(p, window_ms=3000)
    p.add_argument(
        "--shadow-queue-size", type=int, default=GATEWAY_DEFAULTS.shadow_queue_size,
        help="gateway flag: mirrored copies waiting (gateway default)",
    )  # fmt: skip
    p.add_argument(
        "--shadow-workers", type=int, default=GATEWAY_DEFAULTS.shadow_workers,
        help="gateway flag: threads running shadows (gateway default)",
    )  # fmt: skip
    p.add_argument("--gateway-args", default="", help="extra flags for onnxgate serve")
    p.add_argument("--ready-timeout", type=float, default=60.0)
    p.add_argument("--apply-timeout", type=float, default=60.0, help="rule applied within (s)")
    p.add_argument("--settle-s", type=float, default=1.0, help="wait after a rule is applied")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="shadow queue drain (s)")
    p.add_argument("--out", type=Path, default=HERE / "out" / "canary_shadow.md")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.concurrency < 1:
        p.error("--repeats and --concurrency must be >= 1")
    args.model = MODEL  # load_tools' perf_analyzer and servers' gateway command read it
    return args


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = parse_args(argv)
    env = start_run() | run_identity()
    measurements: list[Measurement] = []
    failures: list[str] = []

    def measure(work: Path) -> None:
        build_repo(work / "repo")
        with contextlib.ExitStack() as stack:
            gateway = start_gateway(args, work, stack)

            def one(rnd: int, pos: int, config: Config) -> Measurement:
                return measure_config(gateway, config, args, work, rnd + 1, pos)

            run_rounds(args.repeats, lambda rnd: rotate(CONFIGS, rnd), one, measurements,
                       lambda rnd: f"\n== round {rnd + 1}: {' '.join(order_keys(rnd))}",
                       lambda m: f"   {describe(m)}")  # fmt: skip

    run_in_work_dir("onnxgate-canary-shadow-", args.keep_work, measure, failures, (BenchError,))
    env["loadavg_end"] = load_average()
    failures += [f"({m.config}) round {m.round}: {m.error}" for m in measurements if m.error]
    summary = summarize(measurements)
    text = report(args, env, summary, measurements, failures)
    return finish(
        args, env, text, failures,
        configs={c.key: {"label": c.label, "rule": c.rule} for c in CONFIGS},
        summary=summary,
        measurements=[asdict(m) | {"primary_total": m.primary_total} for m in measurements],
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
