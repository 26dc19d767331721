"""Rollback speed: from a bad candidate's first error to its weight reaching 0 on every gateway.

Starts a redis-server and 2 gateway processes (gw-a, gw-b) on loopback with the statistics
flushed every `--flush-seconds` and the rollout controller ticking every 0.2 s, and registers
examples/rollout_demo.py's models: version 1 (the baseline, rule 1=100,2=0) and version 2,
which fails (INTERNAL) on about 5% of standard-normal rows. Per run, one closed-loop client
thread per gateway sends a fresh random row per request and records (wall time, version that
served, status); a rollout of version 2 starts (steps 10,25,50,100, the interval under test,
`--min-requests`), and the run measures, all on this machine's clock:

- first error -> decision: the first INTERNAL a client saw, to the controller's rollback
  decision (the rollout document's last_decision.at);
- first error -> weight 0: to the moment the last of the gateways applied the rollback's rule
  (its onnxgate_route_applied_timestamp_seconds once onnxgate_route_revision reaches the
  rule's revision);
- the INTERNAL answers the clients got before weight 0.

Two failed intervals roll back (failures_to_rollback 2), so the bound printed next to each
interval is 2 x interval + flush + tick.

    python benchmarks/rollout_rollback.py [--intervals 5,30] [--runs 3] [--flush-seconds 1]
        [--min-requests 200] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType

import grpc
import numpy as np
import onnx
from bench_report import write_json
from servers import free_port, start_redis, stop_all

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from registry_client.rollout.store import RolloutStore

REPO = Path(__file__).resolve().parent.parent
MODEL = "credit"
REPLICAS = ("gw-a", "gw-b")
TICK_SECONDS = 0.2
RULES_POLL_SECONDS = 0.5
STEPS = (10, 25, 50, 100)
FAILURES_TO_ROLLBACK = 2  # the plan's default, which the bound assumes
START_TIMEOUT_SECONDS = 60.0
METRIC = re.compile(r'^(onnxgate_route_revision|onnxgate_route_applied_timestamp_seconds)'
                    r'\{model="credit"\} (\S+)$', re.MULTILINE)  # fmt: skip


def demo_models() -> ModuleType:
    """examples/rollout_demo.py, whose models this measures: what the demo shows is what the
    numbers are about. It imports its neighbour build_models as a script does."""
    sys.path.insert(0, str(REPO / "examples"))
    return importlib.import_module("rollout_demo")


@dataclass
class Gateway:
    replica: str
    grpc_port: int
    metrics_port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def applied(self) -> tuple[int, float] | None:
        """The rule revision this gateway serves for the model and when it applied it."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            found = dict(METRIC.findall(answer.read().decode()))
        if len(found) < 2:
            return None
        return (int(float(found["onnxgate_route_revision"])),
                float(found["onnxgate_route_applied_timestamp_seconds"]))  # fmt: skip


@dataclass
class Traffic:
    """One closed-loop client thread per gateway, a fresh standard-normal row per request;
    every answer is recorded as (wall time, version that served, status)."""

    addresses: list[str]
    records: list[tuple[float, str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        for index, address in enumerate(self.addresses):
            thread = threading.Thread(target=self._run, args=(index, address), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, index: int, address: str) -> None:
        rng = np.random.default_rng(index + int(time.time()))
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not self._stop.is_set():
                request = pb.ModelInferRequest(model_name=MODEL)
                request.inputs.add(name="features", datatype="FP32", shape=[1, 8])
                request.raw_input_contents.append(
                    rng.standard_normal((1, 8)).astype(np.float32).tobytes()
                )
                try:
                    answer = stub.ModelInfer(request, timeout=10)
                    self.records.append((time.time(), answer.model_version, "OK"))
                except grpc.RpcError as exc:
                    self.records.append((time.time(), "", exc.code().name))


@dataclass
class Run:
    interval_s: float
    flush_s: float
    run: int
    first_error_to_decision_s: float
    first_error_to_weight0_s: float  # the last gateway to apply the rollback's rule
    weight0_per_gateway_s: dict[str, float]
    errors_before_weight0: int
    errors_after_weight0: int
    candidate_answers: int
    requests: int
    decisions: list[str]  # the controller's, "hold@4.02": seconds after the first error
    reason: str


def start_gateways(
    url: str, flush_seconds: float, work: Path, processes: list[subprocess.Popen[bytes]]
) -> list[Gateway]:
    """The gateways, each added to `processes` as soon as it runs (the caller stops them)."""
    gateways = []
    for replica in REPLICAS:
        grpc_port, metrics_port = free_port(), free_port()
        command = [
            sys.executable, "-m", "gateway", "serve", "--redis-url", url, "--replica-id", replica,
            "--host", "127.0.0.1", "--grpc-port", str(grpc_port),
            "--metrics-port", str(metrics_port), "--stats-flush-seconds", f"{flush_seconds:g}",
            "--rollout-tick-seconds", f"{TICK_SECONDS:g}",
            "--rules-poll-seconds", f"{RULES_POLL_SECONDS:g}", "--log-format", "text",
        ]  # fmt: skip
        # Every INTERNAL is logged with its traceback: to a file, not the table's terminal.
        with (work / f"{replica}.log").open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        processes.append(process)
        gateways.append(Gateway(replica, grpc_port, metrics_port, process))
    return gateways


def wait_applied(gateways: list[Gateway], revision: int) -> None:
    """Until every gateway serves the rule at `revision` (all its versions loaded)."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    waiting = list(gateways)
    while waiting:
        for gateway in list(waiting):
            if gateway.process.poll() is not None:
                raise SystemExit(f"{gateway.replica} exited {gateway.process.returncode}")
            try:
                applied = gateway.applied()
            except OSError:  # not listening yet
                applied = None
            if applied is not None and applied[0] >= revision:
                waiting.remove(gateway)
        if time.monotonic() > deadline:
            raise SystemExit(f"rule revision {revision} not applied by {waiting}")
        time.sleep(0.05)


def measure(
    registry: RegistryClient, gateways: list[Gateway], interval: float, flush: float,
    number: int, min_requests: int,
) -> Run:  # fmt: skip
    """One rollout of the bad candidate, from a fresh rule 1=100,2=0 to its rollback."""
    store = RolloutStore(registry)
    rule = registry.set_route(MODEL, [Split("1", 100), Split("2", 0)], actor="bench",
                              reason=f"rollback benchmark run {number}")  # fmt: skip
    wait_applied(gateways, rule.revision)  # version 2 loaded again everywhere
    traffic = Traffic([g.address for g in gateways]).start()
    try:
        time.sleep(2.0)  # the baseline serves first, as it would in production
        store.start(None, actor="bench", baseline_from_rule=True, model=MODEL, candidate="2",
                    steps=STEPS, interval_seconds=interval, min_requests=min_requests)  # fmt: skip
        deadline = time.monotonic() + (FAILURES_TO_ROLLBACK + 3) * interval + 30
        while (state := store.get(MODEL)) is not None and state.active:
            if time.monotonic() > deadline:
                store.abort(MODEL, actor="bench", reason="benchmark timeout")
                raise SystemExit(f"run {number}: no rollback within {deadline:.0f} s: {state}")
            time.sleep(0.05)
        assert state is not None
        if state.status != "rolled_back":
            raise SystemExit(f"run {number}: the rollout ended {state.status}, not rolled_back")
        wait_applied(gateways, state.route_revision)
        applied = {g.replica: g.applied() for g in gateways}
        # This run's decisions: the controller's entries since this rollout started.
        decided = [(at, e["action"].split(".")[1]) for e in reversed(store.history(MODEL, 20))
                   if (at := datetime.fromisoformat(e["when"]).timestamp()) >= state.started_at
                   and e["who"].startswith("rollout-controller@")]  # fmt: skip
    finally:
        traffic.stop()
    weight0 = {r: a[1] for r, a in applied.items() if a is not None}
    last = max(weight0.values())
    errors = [at for at, _, code in traffic.records if code == "INTERNAL"]
    if not errors:
        raise SystemExit(f"run {number}: the clients saw no INTERNAL: nothing to time from")
    first = min(errors)
    return Run(
        interval_s=interval, flush_s=flush, run=number,
        first_error_to_decision_s=round(float(state.last_decision["at"]) - first, 3),
        first_error_to_weight0_s=round(last - first, 3),
        weight0_per_gateway_s={r: round(at - first, 3) for r, at in weight0.items()},
        errors_before_weight0=sum(at <= last for at in errors),
        errors_after_weight0=sum(at > last for at in errors),
        candidate_answers=sum(version == "2" for _, version, _ in traffic.records),
        requests=len(traffic.records),
        decisions=[f"{action}@{at - first:.2f}" for at, action in decided],
        reason=str(state.last_decision["reason"]),
    )  # fmt: skip


def _spread(values: list[float], digits: int = 2) -> str:
    median = statistics.median(values)
    return f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def table(runs: list[Run], intervals: list[float]) -> str:
    lines = [
        "| interval | flush | runs | first error -> decision, s | first error -> weight 0 on"
        " both gateways, s | INTERNAL before weight 0 | bound 2 x interval + flush + tick, s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for interval in intervals:
        mine = [r for r in runs if r.interval_s == interval]
        flush = mine[0].flush_s
        bound = FAILURES_TO_ROLLBACK * interval + flush + TICK_SECONDS
        lines.append(
            f"| {interval:g} s | {flush:g} s | {len(mine)} "
            f"| {_spread([r.first_error_to_decision_s for r in mine])} "
            f"| {_spread([r.first_error_to_weight0_s for r in mine])} "
            f"| {_spread([float(r.errors_before_weight0) for r in mine], 0)} | {bound:g} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", default="5,30", help="rollout intervals in seconds (5,30)")
    parser.add_argument("--runs", type=int, default=3, help="rollouts per interval (3)")
    parser.add_argument("--flush-seconds", type=float, default=1.0,
                        help="the gateways' --stats-flush-seconds (1)")  # fmt: skip
    parser.add_argument("--min-requests", type=int, default=200,
                        help="the plan's min_requests (200)")  # fmt: skip
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    args.interval_list = [float(v) for v in args.intervals.split(",") if v.strip()]
    if not args.interval_list or min(args.interval_list) < 1 or args.runs < 1:
        parser.error("--intervals: seconds >= 1 (the plan's minimum); --runs >= 1")
    return args


def main() -> int:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="onnxgate-rollback-"))
    processes: list[subprocess.Popen[bytes]] = []
    load_before = os.getloadavg()
    runs: list[Run] = []
    registry: RegistryClient | None = None
    try:
        redis_server, url = start_redis(work)
        processes.append(redis_server)
        time.sleep(0.3)
        registry = RegistryClient.from_url(url)
        registry.create_model(MODEL, actor="bench")
        models = demo_models()
        for version, model in (("1", models.baseline_model()), ("2", models.erring_model())):
            path = work / version / "model.onnx"
            path.parent.mkdir()
            onnx.save(model, path)
            registry.register_version(MODEL, version, path, actor="bench")
        gateways = start_gateways(url, args.flush_seconds, work, processes)
        for interval in args.interval_list:
            for number in range(1, args.runs + 1):
                run = measure(registry, gateways, interval, args.flush_seconds, number,
                              args.min_requests)  # fmt: skip
                runs.append(run)
                print(f"interval {interval:g} s run {number}: first error -> decision"
                      f" {run.first_error_to_decision_s:.2f} s, -> weight 0"
                      f" {run.first_error_to_weight0_s:.2f} s {run.weight0_per_gateway_s},"
                      f" {run.errors_before_weight0} INTERNAL before, "
                      f"{run.errors_after_weight0} after; decisions {' '.join(run.decisions)};"
                      f" {run.reason}", flush=True)  # fmt: skip
    finally:
        if registry is not None:
            registry.close()
        stop_all(processes)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print()
    print(table(runs, args.interval_list))
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
          f" ({os.cpu_count()} CPUs)")  # fmt: skip
    write_json(args.json_out, {
        "command": shlex.join([sys.executable, *sys.argv]),
        "tick_seconds": TICK_SECONDS, "steps": list(STEPS),
        "failures_to_rollback": FAILURES_TO_ROLLBACK, "min_requests": args.min_requests,
        "load_average": {"before": load_before, "after": load_after},
        "runs": [asdict(r) for r in runs],
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
