"""Serving-core comparison: gateway vs bare thread-pool vs bare aio server under perf_analyzer."""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from models import build_repository

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"
SERVER_CPU = "0"
CLIENT_CPU = "1"
SERVER_LABELS = {
    "gateway": "onnxgate gateway",
    "gateway-aio": "onnxgate request path on grpc.aio",
    "bare": "bare thread-pool grpc.server",
    "aio": "bare grpc.aio server",
}
TOOLS = ("perf_analyzer", "load.py")
LOG_TAIL = 600
UNSTABLE = "Failed to obtain stable measurement"


class BenchError(RuntimeError):
    """A server or a load tool failed: the run records it and carries on."""


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


def tail(text: str | bytes, lines: int = 3) -> str:
    """The last non-empty lines of a log, decoded and joined on one line."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " / ".join(kept)[-LOG_TAIL:]


def free_port() -> int:
    """Ask the kernel for a free loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def kill_group(proc: subprocess.Popen[Any], grace_s: float = 5.0) -> None:
    """Stop a child started in its own session: SIGTERM, then SIGKILL for the whole group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    # The group outlives its leader if it spawned workers (the gateway may): kill those too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(grace_s)


def run_bounded(what: str, cmd: list[str], timeout_s: float, env: dict[str, str], cwd: Path) -> str:
    """Run a command to completion within timeout_s; return its output or raise BenchError."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"{what} timed out after {timeout_s:.0f} s") from err
    finally:
        kill_group(proc)
    if proc.returncode != 0:
        raise BenchError(f"{what} exited {proc.returncode}: {tail(out)}")
    return out.decode(errors="replace")


@contextlib.contextmanager
def running_server(cmd: list[str], log_path: Path, env: dict[str, str]) -> Iterator[Any]:
    """Start a server pinned to the server CPU; always kill its process group on exit."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            kill_group(proc)


def rpc_error(err: grpc.RpcError) -> str:
    """Name the status code of a failed sync call."""
    return err.code().name if isinstance(err, grpc.Call) else repr(err)


def wait_ready(
    port: int, model: str, proc: subprocess.Popen[Any], timeout_s: float, log: Path
) -> None:
    """Poll ServerReady then ModelReady until both say ready; fail if the server dies."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"server exited {proc.returncode}: {tail(log.read_bytes())}")
            try:
                if stub.ServerReady(pb.ServerReadyRequest(), timeout=1.0).ready:
                    if model_ready(stub, model):
                        return
                    last = f"model {model} not ready"
                else:
                    last = "ServerReady false"
            except grpc.RpcError as err:
                last = rpc_error(err)
            time.sleep(0.2)
    raise BenchError(f"not ready after {timeout_s:.0f} s ({last}): {tail(log.read_bytes())}")


def model_ready(stub: pb_grpc.GRPCInferenceServiceStub, model: str) -> bool:
    """ModelReady for the model; a server without that RPC counts as ready."""
    try:
        return stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=1.0).ready
    except grpc.RpcError as err:
        if isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.UNIMPLEMENTED:
            return True
        raise


def server_command(
    kind: str, args: argparse.Namespace, repo: Path, port: int, metrics_port: int
) -> list[str]:
    """The command line of one server under test."""
    model_path = repo / args.model / "1" / "model.onnx"
    if kind == "gateway":
        return [
            str(args.onnxgate),
            "serve",
            "--models",
            str(repo),
            "--grpc-port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            "--host",
            HOST,
            "--data-dir",  # its private registry lives with the run, not in the user's home
            str(repo.parent / "gateway-data"),
            *shlex.split(args.gateway_args),
        ]
    if kind == "gateway-aio":
        script = str(HERE / "aio_gateway.py")
        return [args.python, script, "--models", str(repo), "--port", str(port)]
    bare = [args.python, str(HERE / "bare_server.py"), "--model-path", str(model_path)]
    bare += ["--model-name", args.model, "--host", HOST, "--port", str(port)]
    return [*bare, "--aio"] if kind == "aio" else [*bare, "--threads", str(args.threads)]


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
    cmd = ["taskset", "-c", CLIENT_CPU, str(args.perf_analyzer), "-m", args.model, "-i", "grpc"]
    cmd += ["-u", f"{HOST}:{port}", "-b", "1"]
    rate = getattr(args, "request_rate", None)  # a fixed arrival rate instead of concurrency
    cmd += ["--request-rate-range", str(rate)] if rate else ["--concurrency-range", str(conc)]
    cmd += ["-p", str(args.pa_window_ms), "--max-trials", str(args.pa_max_trials)]
    cmd += ["--stability-percentage", str(args.pa_stability), "-f", str(out_csv)]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(args.perf_analyzer_lib), env.get("LD_LIBRARY_PATH", "")) if p
    )
    # Worst case: every trial window runs, plus start-up and the final report.
    timeout = args.pa_window_ms / 1e3 * (args.pa_max_trials + 2) + 60
    for attempt in range(args.pa_retries + 1):
        try:
            run_bounded("perf_analyzer", cmd, timeout, env, work)
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


def run_floor(args: argparse.Namespace, model_path: Path, work: Path) -> dict[str, Any]:
    """Run floor.py once on the server CPU."""
    out_json = work / "floor.json"
    cmd = ["taskset", "-c", SERVER_CPU, args.python, str(HERE / "floor.py")]
    cmd += ["--model-path", str(model_path), "--batch", "1"]
    cmd += ["--duration", str(args.floor_duration), "--json-out", str(out_json)]
    print(
        run_bounded("floor.py", cmd, 2 * args.floor_duration + 60, dict(os.environ), work).strip()
    )
    result: dict[str, Any] = json.loads(out_json.read_text())
    return result


@dataclass
class Server:
    """A server under test, started once for the whole run."""

    kind: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


def start_servers(
    args: argparse.Namespace, repo: Path, work: Path, stack: contextlib.ExitStack
) -> list[Server]:
    """Start every server (all pinned to the server CPU; an idle one costs nothing)."""
    servers: list[Server] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for kind in args.servers:
        port = free_port()
        # The kernel may hand the same ephemeral port out twice once the probe socket closes.
        while (metrics_port := free_port()) in {port, *(s.port for s in servers)}:
            pass
        log = work / f"server_{kind}.log"
        cmd = server_command(kind, args, repo, port, metrics_port)
        print(f"== {SERVER_LABELS[kind]}: {shlex.join(cmd)}", flush=True)
        proc = stack.enter_context(running_server(cmd, log, env))
        wait_ready(port, args.model, proc, args.ready_timeout, log)
        servers.append(Server(kind, port, proc, log))
    return servers


def bench_round(
    servers: list[Server], args: argparse.Namespace, work: Path, runs: list[Run], repeat: int
) -> None:
    """One round: every (concurrency, tool), the servers measured back to back."""
    print(f"\n== round {repeat + 1}", flush=True)
    for conc in args.concurrency:
        for tool in args.tools:
            for server in servers:
                if server.proc.poll() is not None:
                    raise BenchError(f"{server.kind} died: {tail(server.log.read_bytes())}")
                run = measure_one(tool, args, server.port, conc, work)
                run.server, run.repeat = server.kind, repeat
                runs.append(run)
                print(f"   {server.kind:12s} {describe(run)}", flush=True)


def measure_one(tool: str, args: argparse.Namespace, port: int, conc: int, work: Path) -> Run:
    """Run one tool; a tool failure becomes a Run with an error, not an abort."""
    try:
        if tool == "perf_analyzer":
            return run_perf_analyzer(args, port, conc, work)
        return run_load_py(args, port, conc, work)
    except BenchError as err:
        return Run("", tool, conc, 0, error=str(err))


def describe(run: Run) -> str:
    """One progress line."""
    head = f"{run.tool:13s} c={run.concurrency:<3d} #{run.repeat + 1}"
    if run.rps is None:
        return f"{head} FAILED: {run.error}"
    text = f"{head} {run.rps:9.1f} req/s  p50 {run.p50_ms:.3f} ms  p99 {run.p99_ms:.3f} ms"
    return f"{text}  ({run.error})" if run.error else text


def medians(runs: list[Run]) -> list[dict[str, Any]]:
    """Median req/s, p50 and p99 per (tool, server, concurrency), with the ratio to bare."""
    groups: dict[tuple[str, str, int], list[Run]] = {}
    for run in runs:
        if run.rps is not None:
            groups.setdefault((run.tool, run.server, run.concurrency), []).append(run)
    rows: list[dict[str, Any]] = [
        {
            "tool": tool,
            "server": server,
            "concurrency": conc,
            "n": len(group),
            "rps": statistics.median(r.rps for r in group if r.rps is not None),
            "p50_ms": statistics.median(r.p50_ms for r in group if r.p50_ms is not None),
            "p99_ms": statistics.median(r.p99_ms for r in group if r.p99_ms is not None),
        }
        for (tool, server, conc), group in groups.items()
    ]
    bare = {(r.tool, r.concurrency, r.repeat): r for r in runs if r.server == "bare" and r.rps}
    for row in rows:
        ratios = [
            r.rps / base.rps
            for r in runs
            if (r.tool, r.server, r.concurrency) == (row["tool"], row["server"], row["concurrency"])
            and r.rps
            and (base := bare.get((r.tool, r.concurrency, r.repeat))) is not None
            and base.rps
        ]
        row["vs_bare"] = round(statistics.median(ratios), 3) if ratios else None
        row["vs_bare_rounds"] = [round(x, 2) for x in ratios]
    return rows


def markdown_table(rows: list[dict[str, Any]], tool: str, order: list[str]) -> list[str]:
    """The Markdown table of one tool's medians, in server then concurrency order."""
    lines = [
        "| server | concurrency | req/s (median) | p50 ms | p99 ms"
        " | req/s / bare thread-pool, same round: median (each round) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    mine = [r for r in rows if r["tool"] == tool]
    mine.sort(key=lambda r: (order.index(r["server"]), r["concurrency"]))
    for r in mine:
        rounds = ", ".join(f"{x:.2f}" for x in r["vs_bare_rounds"])
        ratio = "-" if r["vs_bare"] is None else f"{r['vs_bare']:.2f} ({rounds})"
        lines.append(
            f"| {SERVER_LABELS[r['server']]} | {r['concurrency']} | {r['rps']:,.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {ratio} |"
        )
    return lines


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {p: metadata.version(p) for p in ("grpcio", "protobuf", "onnxruntime", "numpy")}
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        # Other work on a shared 2-CPU box skews everything: keep the evidence with the numbers.
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        **versions,
    }


def report(
    args: argparse.Namespace,
    env: dict[str, Any],
    floor: dict[str, Any] | None,
    rows: list[dict[str, Any]],
    failures: list[str],
) -> str:
    """Render the Markdown report."""
    lines = [
        f"# Serving core: {args.model} model, batch 1",
        "",
        f"{env['date']}, {env['cpu']} x {env['cpus']}, Python {env['python']}, "
        f"grpcio {env['grpcio']}, protobuf {env['protobuf']}, onnxruntime {env['onnxruntime']}. "
        f"Server on CPU {SERVER_CPU}, load generator on CPU {CLIENT_CPU}, loopback; "
        f"medians of {args.repeats} run(s); perf_analyzer -p {args.pa_window_ms} "
        f"--max-trials {args.pa_max_trials} --stability-percentage {args.pa_stability}; "
        f"bare thread-pool server with {args.threads} threads. "
        f"Load average (1/5/15 min) at start {env['loadavg_start']}, "
        f"at end {env.get('loadavg_end')}.",
        "",
    ]
    if floor:
        o, p = floor["ort"], floor["protobuf"]
        lines += [
            f"Floor (in-process, CPU {SERVER_CPU}): onnxruntime session.run "
            f"{o['calls_per_s']:,.0f} calls/s "
            f"(p50 {o['us_p50']:.1f} us, p99 {o['us_p99']:.1f} us); "
            f"protobuf parse + frombuffer + build + serialise {p['us_mean']:.1f} us per request.",
            "",
        ]
    order = [s for s in SERVER_LABELS if s in args.servers]
    for tool in args.tools:
        lines += [f"## {tool}", "", *markdown_table(rows, tool, order), ""]
    if failures:
        lines += ["## Failures", "", *(f"- {f}" for f in failures), ""]
    return "\n".join(lines)


def csv_list(kind: type[int] | type[str], choices: tuple[str, ...] = ()) -> Any:
    """Argparse type for a comma-separated list, optionally restricted to choices."""

    def parse(value: str) -> list[Any]:
        items = [kind(v.strip()) for v in value.split(",") if v.strip()]
        bad = [i for i in items if choices and i not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"bad list {value!r}; choices {list(choices)}")
        return items

    return parse


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--servers", type=csv_list(str, tuple(SERVER_LABELS)), default=["gateway", "bare", "aio"]
    )
    p.add_argument("--concurrency", type=csv_list(int), default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="tiny", choices=["tiny", "medium"])
    p.add_argument("--threads", type=int, default=4, help="bare thread-pool size")
    p.add_argument("--with-load-py", action="store_true", help="also measure with load.py")
    p.add_argument("--load-duration", type=float, default=10.0)
    p.add_argument("--load-warmup", type=float, default=2.0)
    p.add_argument("--floor-duration", type=float, default=5.0)
    p.add_argument("--no-floor", action="store_true")
    add_perf_analyzer_args(p, window_ms=5000)
    p.add_argument("--gateway-args", default="", help="extra flags for onnxgate serve")
    p.add_argument("--python", default=sys.executable, help="interpreter for bare/load/floor")
    p.add_argument("--ready-timeout", type=float, default=60.0)
    p.add_argument("--out", type=Path, default=HERE / "out" / "serving_core.md")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    args.tools = list(TOOLS) if args.with_load_py else ["perf_analyzer"]
    return args


def check_cpus() -> None:
    """Server and client pinning need CPUs 0 and 1."""
    allowed = os.sched_getaffinity(0)
    if not {int(SERVER_CPU), int(CLIENT_CPU)} <= allowed:
        raise SystemExit(f"need CPUs {SERVER_CPU} and {CLIENT_CPU}; allowed: {sorted(allowed)}")


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into SystemExit so every finally block kills its children."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = parse_args(argv)
    check_cpus()
    signal.signal(signal.SIGTERM, on_sigterm)
    env = environment()
    runs: list[Run] = []
    failures: list[str] = []
    floor: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="onnxgate-serving-core-") as tmp:
        work = Path(tmp)
        repo = work / "repo"
        build_repository(repo, [args.model])
        if not args.no_floor:
            try:
                floor = run_floor(args, repo / args.model / "1" / "model.onnx", work)
            except BenchError as err:
                failures.append(f"floor.py: {err}")
        # Servers measured back to back within each round, so drift in a shared host's load
        # hits them alike; ratios are taken per round, then their median reported.
        try:
            with contextlib.ExitStack() as stack:
                servers = start_servers(args, repo, work, stack)
                for repeat in range(args.repeats):
                    bench_round(servers, args, work, runs, repeat)
        except BenchError as err:
            failures.append(str(err))
            print(f"   FAILED: {err}", flush=True)
    env["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    failures += [
        f"{SERVER_LABELS[r.server]} {r.tool} c={r.concurrency}: {r.error}" for r in runs if r.error
    ]
    rows = medians(runs)
    text = report(args, env, floor, rows, failures)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    raw = {
        "environment": env,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "floor": floor,
        "medians": rows,
        "runs": [asdict(r) for r in runs],
        "failures": failures,
    }
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
