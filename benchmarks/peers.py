"""Peers: onnxgate against MLServer and KServe, and the bare ceiling, on the same ONNX model.

Every server runs pinned to the server CPU (`taskset`, its worker processes included) on a free
loopback port and serves the same model file through onnxruntime with 1 intra-op thread:

- onnxgate (`onnxgate serve`) with its defaults, and with drift sketching off;
- the bare thread-pool server (`bare_server.py`), the Python ceiling;
- MLServer through a custom runtime (`peers/mlserver_onnx.py`): defaults, `parallel_workers: 0`
  (its best), that without the per-request access log, and that with adaptive batching;
- KServe's ModelServer through a `kserve.Model` (`peers/kserve_onnx.py`): defaults, and without
  its two log lines per request.

MLServer and KServe live in their own virtualenvs under `.venv-peers/` (created on first use,
reused after), with the same onnxruntime version as ours. Each server's answer to one batch is
checked against onnxruntime in-process before anything is measured: a wrong answer fails the
run. Then in each round every server is measured back to back with `load.py` (closed loop; the
order rotated per round), onnxgate and bare also with perf_analyzer, which cannot drive the
peers (they do not serve Triton's ModelConfig). Ratios are taken within a round, then their
median reported. The full measurement (about 12 minutes):

    .venv/bin/python benchmarks/peers.py --repeats 3 --duration 10 --warmup 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
from bare_server import BareModel
from bench_report import display_command, failures_section, fmt, ratio_cell
from driver import (
    csv_list,
    finish,
    installed_versions,
    load_average,
    perf_analyzer_version,
    rotate,
    run_rounds,
    start_run,
)
from load import V2_TO_NUMPY, TensorSpec, build_request, concrete_shape
from load_tools import Run, add_perf_analyzer_args, describe_run, measure_one
from models import build_repository
from round_stats import run_medians
from servers import (
    CLIENT_CPU,
    HOST,
    ROOT,
    SERVER_CPU,
    BenchError,
    Server,
    check_alive,
    claim_port,
    kill_group,
    launch,
    server_command,
    tail,
    wait_ready,
)

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.settings import Settings

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
MLSERVER_VERSION = "1.7.1"
KSERVE_VERSION = "0.21.0"
# Dynamic batching, for the batching variants of both sides: MLServer's adaptive batching and
# the gateway's batcher wait the same 2 ms; the gateway needs threads to hold waiting requests.
BATCH_SIZE = 32
BATCH_TIME_S = 0.002
GATEWAY_BATCH_THREADS = 48
CHECK_BATCH = 4  # the answer check sends a real batch, so the batch dimension is exercised
CHECK_SEED = 7
INSTALL_TIMEOUT_S = 1800.0
PERF_ANALYZER_NOTE = (
    "perf_analyzer cannot drive MLServer or KServe: after ModelMetadata it asks for Triton's "
    "ModelConfig, which neither serves, and stops with 'failed to get model config: Method not "
    "found!'."
)

SERVERS_NOTE = (
    "MLServer runs `benchmarks/peers/mlserver_onnx.py` with host 127.0.0.1 and free ports in "
    "settings.json; KServe runs `benchmarks/peers/kserve_onnx.py` and binds its gRPC and HTTP "
    "ports on all interfaces (it has no host option; the traffic is loopback only). Both runtimes "
    "open onnxruntime like onnxgate: 1 intra-op and 1 inter-op thread, sequential execution."
)


@dataclass(frozen=True)
class Venv:
    """A peer's virtualenv: what to pip install, and whose versions to report."""

    name: str
    requirements: tuple[str, ...]
    reported: tuple[str, ...]


@dataclass(frozen=True)
class Spec:
    """One server configuration under test.

    family: "ours", "ceiling" (both driven by perf_analyzer too), "mlserver" or "kserve".
    flags: extra command-line flags (gateway, KServe); settings / model_settings: what goes
    into MLServer's settings.json / model-settings.json besides ports and the model."""

    label: str
    family: str
    flags: tuple[str, ...] = ()
    settings: Mapping[str, object] = field(default_factory=dict)
    model_settings: Mapping[str, object] = field(default_factory=dict)

    @property
    def is_peer(self) -> bool:
        """MLServer or KServe (not ours, not the ceiling)."""
        return self.family in VENVS


def venvs() -> dict[str, Venv]:
    """The peers' virtualenvs; onnxruntime pinned to ours so the model runs the same code."""
    ort = f"onnxruntime=={metadata.version('onnxruntime')}"
    common = ("onnxruntime", "numpy", "grpcio", "protobuf")
    return {
        # MLServer 1.7.1's workers crash with newer uvloop.
        "mlserver": Venv(
            "mlserver",
            (f"mlserver=={MLSERVER_VERSION}", "uvloop==0.21.0", ort, "numpy"),
            ("mlserver", "uvloop", *common),
        ),
        "kserve": Venv(
            "kserve", (f"kserve=={KSERVE_VERSION}", ort, "numpy"), ("kserve", "uvloop", *common)
        ),
    }


VENVS = venvs()
GATEWAY_DEFAULTS = Settings()
DRIFT = "on" if GATEWAY_DEFAULTS.drift_buffer_rows > 0 else "off"
SPECS: dict[str, Spec] = {
    "gateway": Spec(
        f"onnxgate gateway, defaults ({GATEWAY_DEFAULTS.grpc_threads} threads, registry "
        f"routing, metrics, drift sketching {DRIFT})",
        "ours",
    ),
    "gateway-nodrift": Spec(
        "onnxgate gateway, drift sketching off", "ours", ("--drift-buffer-rows", "0")
    ),
    "gateway-batch": Spec(
        f"onnxgate gateway, dynamic batching {BATCH_TIME_S * 1e3:g} ms, "
        f"{GATEWAY_BATCH_THREADS} threads",
        "ours",
        (
            "--batch-delay-us",
            str(round(BATCH_TIME_S * 1e6)),
            "--grpc-threads",
            str(GATEWAY_BATCH_THREADS),
        ),
    ),
    "bare": Spec("bare thread-pool grpc.server (the ceiling)", "ceiling"),
    "mlserver": Spec("MLServer, defaults (parallel_workers 1)", "mlserver"),
    "mlserver-pw0": Spec(
        "MLServer, parallel_workers 0", "mlserver", settings={"parallel_workers": 0}
    ),
    # MLServer's default debug=true logs one line per request (its gRPC LoggingInterceptor).
    "mlserver-pw0-quiet": Spec(
        "MLServer, parallel_workers 0, debug off (no access log)",
        "mlserver",
        settings={"parallel_workers": 0, "debug": False},
    ),
    "mlserver-batch": Spec(
        f"MLServer, parallel_workers 0, adaptive batching {BATCH_SIZE} / {BATCH_TIME_S * 1e3:g} ms",
        "mlserver",
        settings={"parallel_workers": 0},
        model_settings={"max_batch_size": BATCH_SIZE, "max_batch_time": BATCH_TIME_S},
    ),
    "kserve": Spec("KServe ModelServer, defaults", "kserve"),
    # KServe logs every gRPC call (LoggingInterceptor) and every request's latencies by default;
    # without its logging configuration both stay below the root logger's WARNING level.
    "kserve-quiet": Spec(
        "KServe ModelServer, per-request logging off",
        "kserve",
        ("--enable_latency_logging", "false", "--configure_logging", "false"),
    ),
}
# gateway-batch only pays on a model heavy enough to batch: ask for it with --servers.
DEFAULT_SERVERS = [kind for kind in SPECS if kind != "gateway-batch"]


class WrongAnswer(RuntimeError):
    """A server answered a request differently from onnxruntime: the run stops."""


@dataclass
class Check:
    """The answer check of one server."""

    server: str
    outputs: list[str]
    max_abs_diff: float
    raw_outputs: bool  # raw_output_contents, or typed contents (slower to build and parse)


def ensure_venv(args: argparse.Namespace, venv: Venv) -> Path:
    """Create or reuse a peer's virtualenv; return its python.

    A marker file holds the requirements of the last successful install: a virtualenv is
    reused when it matches, so only the first run (or a changed pin) pays for pip."""
    home: Path = args.venvs / venv.name
    python = home / "bin" / "python"
    marker = home / "onnxgate-peers-requirements.txt"
    wanted = "\n".join(venv.requirements) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    log = home.parent / f"{venv.name}-install.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"== installing {venv.name}: {' '.join(venv.requirements)} (log: {log})", flush=True)
    commands = [[args.base_python, "-m", "venv", str(home)]] if not python.exists() else []
    commands.append([str(python), "-m", "pip", "install", *venv.requirements])
    with log.open("wb") as out:
        for cmd in commands:
            out.write(f"$ {shlex.join(cmd)}\n".encode())
            out.flush()
            try:
                done = subprocess.run(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=INSTALL_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as err:
                raise BenchError(f"installing {venv.name} timed out; see {log}") from err
            except OSError as err:  # the interpreter itself is missing
                raise BenchError(f"installing {venv.name}: {shlex.join(cmd)}: {err}") from err
            if done.returncode != 0:
                raise BenchError(
                    f"installing {venv.name} failed (exit {done.returncode}): "
                    f"{tail(log.read_bytes())}; see {log}"
                )
    marker.write_text(wanted)
    return python


def prepare_venvs(
    args: argparse.Namespace, env: dict[str, Any], failures: list[str]
) -> dict[str, Path]:
    """The python of each peer family in use; a failed install drops that family's servers."""
    pythons: dict[str, Path] = {}
    for family in sorted({SPECS[kind].family for kind in args.servers} & set(VENVS)):
        venv = VENVS[family]
        try:
            pythons[family] = ensure_venv(args, venv)
            env[family] = installed_versions(pythons[family], venv.reported)
        except BenchError as err:
            failures.append(str(err))
            print(f"   FAILED: {err}", flush=True)
    if (versions := perf_analyzer_version(args)) is not None:
        env["perf_analyzer"] = versions
    env["onnxgate"] = metadata.version("onnxgate")
    return pythons


def tensors_json(reference: BareModel) -> dict[str, list[dict[str, Any]]]:
    """The model's v2 inputs and outputs, as the peers report them in ModelMetadata."""
    return {
        "inputs": [asdict(t) for t in reference.inputs],
        "outputs": [asdict(t) for t in reference.outputs],
    }


def mlserver_folder(
    kind: str, args: argparse.Namespace, reference: BareModel, model_path: Path, work: Path,
    taken: set[int],
) -> tuple[Path, int]:  # fmt: skip
    """Write MLServer's settings.json and <model>/model-settings.json; return (folder, port).

    MLServer answers ModelMetadata from model-settings.json, so load.py shapes its request
    from the inputs written there, those of the ONNX session."""
    spec = SPECS[kind]
    home = work / kind
    grpc_port = claim_port(taken)
    settings = {
        "host": HOST,
        "grpc_port": grpc_port,
        "http_port": claim_port(taken),
        "metrics_port": claim_port(taken),
        # Both default to folders in the working directory, which is the repository here.
        "metrics_dir": str(home / "metrics"),
        "environments_dir": str(home / "envs"),
        **spec.settings,
    }
    model_settings = {
        "name": args.model,
        "implementation": "mlserver_onnx.OnnxRuntimeModel",
        "parameters": {"uri": str(model_path), "version": "1"},
        **tensors_json(reference),
        **spec.model_settings,
    }
    (home / args.model).mkdir(parents=True, exist_ok=True)
    (home / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    (home / args.model / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return home, grpc_port


def launch_command(
    kind: str, args: argparse.Namespace, pythons: dict[str, Path], reference: BareModel,
    repo: Path, work: Path, taken: set[int],
) -> tuple[list[str], dict[str, str], int]:  # fmt: skip
    """Command line, environment and gRPC port of one server."""
    spec = SPECS[kind]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    model_path = repo / args.model / "1" / "model.onnx"
    if spec.family == "ceiling":
        port = claim_port(taken)
        return server_command("bare", args, repo, port, 0), env, port
    if spec.family == "ours":
        # Each gateway gets its own repository copy: server_command puts the gateway's private
        # registry (a redis-server) next to it, and two gateways must not share one.
        own = work / kind / "repo"
        shutil.copytree(repo, own, dirs_exist_ok=True)
        port, metrics_port = claim_port(taken), claim_port(taken)
        return [*server_command("gateway", args, own, port, metrics_port), *spec.flags], env, port
    python = pythons[spec.family]
    if spec.family == "mlserver":
        folder, port = mlserver_folder(kind, args, reference, model_path, work, taken)
        # The runtime module is found on PYTHONPATH, by MLServer's worker processes too.
        env["PYTHONPATH"] = str(PEERS_DIR)
        return [str(python.parent / "mlserver"), "start", str(folder)], env, port
    port = claim_port(taken)
    tensors = work / kind / "tensors.json"
    tensors.parent.mkdir(parents=True, exist_ok=True)
    tensors.write_text(json.dumps(tensors_json(reference), indent=2) + "\n")
    cmd = [str(python), str(PEERS_DIR / "kserve_onnx.py"), "--model_name", args.model]
    cmd += ["--model_path", str(model_path), "--metadata", str(tensors), "--grpc_port", str(port)]
    cmd += ["--http_port", str(claim_port(taken)), *spec.flags]
    return cmd, env, port


def decode_outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Every output of a response as an array: raw_output_contents or typed contents."""
    arrays: dict[str, np.ndarray] = {}
    for i, out in enumerate(response.outputs):
        dtype = V2_TO_NUMPY[out.datatype]
        if response.raw_output_contents:
            flat = np.frombuffer(response.raw_output_contents[i], dtype=dtype)
        else:  # typed contents: the one field set is the datatype's
            fields = out.contents.ListFields()
            flat = np.array(fields[0][1] if fields else [], dtype=dtype)
        arrays[out.name] = flat.reshape(tuple(out.shape))
    return arrays


def check_answer(server: Server, args: argparse.Namespace, reference: BareModel) -> Check:
    """Send one batch and compare every output with onnxruntime in this process."""
    specs = [
        TensorSpec(t.name, t.datatype, concrete_shape(t.shape, CHECK_BATCH))
        for t in reference.inputs
    ]
    request = build_request(args.model, "", specs, np.random.default_rng(CHECK_SEED))
    feeds = {
        s.name: np.frombuffer(raw, dtype=V2_TO_NUMPY[s.datatype]).reshape(s.shape)
        for s, raw in zip(specs, request.raw_input_contents, strict=True)
    }
    names = reference.output_names
    expected = dict(zip(names, reference.session.run(names, feeds), strict=True))
    with grpc.insecure_channel(f"{HOST}:{server.port}") as channel:
        try:
            response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30.0)
        except grpc.RpcError as err:
            raise WrongAnswer(f"{server.kind}: ModelInfer failed: {err}") from err
    got = decode_outputs(response)
    if set(got) != set(expected):
        raise WrongAnswer(f"{server.kind}: outputs {sorted(got)}, expected {sorted(expected)}")
    worst = 0.0
    for name, want in expected.items():
        if got[name].shape != want.shape or not np.allclose(got[name], want, rtol=1e-4, atol=1e-6):
            raise WrongAnswer(
                f"{server.kind}: output {name} {got[name].shape} differs from onnxruntime's "
                f"{want.shape}: {got[name].ravel()[:4]} vs {want.ravel()[:4]}"
            )
        worst = max(worst, float(np.max(np.abs(got[name] - want), initial=0.0)))
    return Check(server.kind, sorted(got), worst, bool(response.raw_output_contents))


def start_servers(
    args: argparse.Namespace, pythons: dict[str, Path], reference: BareModel, repo: Path,
    work: Path, stack: contextlib.ExitStack, failures: list[str],
) -> list[Server]:  # fmt: skip
    """Start every server one after the other, each ready before the next starts.

    A server that does not come up is reported and left out; the others still run."""
    servers: list[Server] = []
    taken: set[int] = set()
    for kind in args.servers:
        if SPECS[kind].is_peer and SPECS[kind].family not in pythons:
            continue  # its virtualenv failed to install: already reported
        cmd, env, port = launch_command(kind, args, pythons, reference, repo, work, taken)
        log = work / f"server_{kind}.log"
        proc = launch(stack, kind, cmd, log, env)
        try:
            wait_ready(port, args.model, proc, args.ready_timeout, log)
        except BenchError as err:
            kill_group(proc)  # now, not at the end: it would share the server CPU meanwhile
            kept = args.out.with_name(f"{args.out.stem}_{kind}.log")
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, kept)  # the run's own folder is removed at the end
            failures.append(f"{kind} did not start: {err} (log kept in {kept})")
            print(f"   FAILED: {failures[-1]}", flush=True)
            continue
        servers.append(Server(kind, port, proc, log))
    return servers


def tools_for(kind: str, args: argparse.Namespace) -> list[str]:
    """load.py for every server; perf_analyzer also for ours and the ceiling."""
    if SPECS[kind].is_peer or args.no_perf_analyzer:
        return ["load.py"]
    return ["load.py", "perf_analyzer"]


def measure(server: Server, tool: str, args: argparse.Namespace, conc: int, work: Path) -> Run:
    """One measurement; a dead server or a run with no answers is a Run with an error."""
    try:
        check_alive(server.proc, server.log, "server")
    except BenchError as err:
        return Run(server.kind, tool, conc, 0, error=str(err))
    run = measure_one(tool, args, server.port, conc, work)
    run.server = server.kind
    if run.rps is not None and (not run.rps or run.p50_ms is None or run.p99_ms is None):
        run.rps = None  # load.py counted no successful request: nothing to take a median of
        run.error = run.error or "no successful request"
    return run


def measure_rounds(
    servers: list[Server], args: argparse.Namespace, work: Path, runs: list[Run]
) -> None:
    """Every round: every server back to back, starting one further along each round."""

    def plan(rnd: int) -> list[tuple[int, Server, str]]:
        order = rotate(servers, rnd)
        return [(c, s, t) for c in args.concurrency for s in order for t in tools_for(s.kind, args)]

    def one(rnd: int, pos: int, item: tuple[int, Server, str]) -> Run:
        conc, server, tool = item
        run = measure(server, tool, args, conc, work)
        run.repeat = rnd
        return run

    def heading(rnd: int) -> str:
        return f"\n== round {rnd + 1}: {', '.join(s.kind for s in rotate(servers, rnd))}"

    run_rounds(args.repeats, plan, one, runs, heading,
               lambda run: f"   {run.server:18s} {describe_run(run)}")  # fmt: skip


def add_best_peer_ratios(rows: list[dict[str, Any]], runs: list[Run]) -> dict[str, list[str]]:
    """Add each row's req/s over the best peer's of the same round (tool, concurrency).

    Returns the best peer's kind per round, keyed "tool c=N", for the report."""
    best: dict[tuple[str, int, int], Run] = {}
    for run in runs:
        if not run.rps or not SPECS[run.server].is_peer:
            continue
        key = (run.tool, run.concurrency, run.repeat)
        if key not in best or run.rps > (best[key].rps or 0.0):
            best[key] = run
    per_row: dict[tuple[str, str, int], list[float]] = {}
    for run in runs:
        peer = best.get((run.tool, run.concurrency, run.repeat))
        if run.rps and peer is not None and peer.rps:
            per_row.setdefault((run.tool, run.server, run.concurrency), []).append(
                run.rps / peer.rps
            )
    for row in rows:
        ratios = per_row.get((row["tool"], row["server"], row["concurrency"]), [])
        row["vs_best_peer"] = round(statistics.median(ratios), 3) if ratios else None
        row["vs_best_peer_rounds"] = [round(x, 3) for x in ratios]
    winners: dict[str, list[str]] = {}
    for (tool, conc, _), run in sorted(best.items()):
        winners.setdefault(f"{tool} c={conc}", []).append(run.server)
    return winners


def markdown_table(rows: list[dict[str, Any]], order: list[str]) -> list[str]:
    """One tool's medians, servers in the order asked for; the best-peer column when a peer
    was measured with that tool."""
    with_peer = any(r["vs_best_peer"] is not None for r in rows)
    head = "| server | concurrency | req/s (median) | p50 ms | p99 ms | / bare, same round: median"
    head += " (each round) |"
    rule = "| --- | ---: | ---: | ---: | ---: | ---: |"
    if with_peer:
        head += " / best peer, same round: median (each round) |"
        rule += " ---: |"
    lines = [head, rule]
    for r in sorted(rows, key=lambda r: (order.index(r["server"]), r["concurrency"])):
        line = (
            f"| {SPECS[r['server']].label} | {r['concurrency']} | {r['rps']:,.0f} | "
            f"{fmt(r['p50_ms'], '.2f')} | {fmt(r['p99_ms'], '.2f')} | "
            f"{ratio_cell(r['vs_bare'], r['vs_bare_rounds'])} |"
        )
        if with_peer:
            line += f" {ratio_cell(r['vs_best_peer'], r['vs_best_peer_rounds'])} |"
        lines.append(line)
    return lines


def tool_section(
    tool: str, rows: list[dict[str, Any]], order: list[str], winners: dict[str, list[str]]
) -> list[str]:
    """The report section of one load tool: its table, then the best peer of each round."""
    mine = [r for r in rows if r["tool"] == tool]
    if not mine:
        return []
    lines = [f"## {tool}", "", *markdown_table(mine, order), ""]
    best = [f"{key}: {', '.join(kinds)}" for key, kinds in winners.items() if key.startswith(tool)]
    if best:
        lines += [f"Best peer in each round, {'; '.join(best)}.", ""]
    return lines


def settings_note(kind: str) -> str:
    """What an MLServer variant sets besides host, ports and the model."""
    spec = SPECS[kind]
    parts = [
        f"{name}: `{json.dumps(dict(values))}`"
        for name, values in (
            ("settings.json", spec.settings),
            ("model-settings.json", spec.model_settings),
        )
        if values
    ]
    return f" ({'; '.join(parts)})" if parts else ""


def answers_line(checks: list[Check]) -> str:
    """How each server's answer compared with onnxruntime in-process."""
    if not checks:
        return "Answers: no server was checked."
    each = "; ".join(
        f"{c.server} max |diff| {c.max_abs_diff:.1e}, {'raw' if c.raw_outputs else 'typed'} outputs"
        for c in checks
    )
    return f"Answers: one batch of {CHECK_BATCH} sent to each server matched onnxruntime ({each})."


def versions_line(env: dict[str, Any]) -> str:
    """The peers' installed versions, one phrase per virtualenv."""
    parts = []
    for family in VENVS:
        if family in env:
            found = ", ".join(f"{k} {v}" for k, v in env[family].items() if v)
            parts.append(f"{family} virtualenv: {found}")
    if "perf_analyzer" in env:
        parts.append(f"perf_analyzer from tritonclient {env['perf_analyzer']['tritonclient']}")
    return "; ".join(parts)


def report(
    args: argparse.Namespace, env: dict[str, Any], commands: dict[str, str],
    checks: list[Check], rows: list[dict[str, Any]], winners: dict[str, list[str]],
    failures: list[str],
) -> str:  # fmt: skip
    """Render the Markdown report."""
    lines = [
        f"# Peers: {args.model} model, batch 1",
        "",
        f"{env['date']}, {env['cpu']} x {env['cpus']}, Python {env['python']}; onnxgate "
        f"{env['onnxgate']} with grpcio {env['grpcio']}, protobuf {env['protobuf']}, "
        f"onnxruntime {env['onnxruntime']}, numpy {env['numpy']}; {versions_line(env)}. "
        f"Each server pinned to CPU {SERVER_CPU} (all its processes), load generator to CPU "
        f"{CLIENT_CPU}, loopback; servers started once, measured back to back in each of "
        f"{args.repeats} round(s), the order rotated per round; load.py closed loop, "
        f"{args.load_duration:g} s after {args.load_warmup:g} s warm-up; perf_analyzer -p "
        f"{args.pa_window_ms} --max-trials {args.pa_max_trials} --stability-percentage "
        f"{args.pa_stability}; bare server with {args.threads} threads; every server runs the "
        f"model with 1 onnxruntime intra-op thread. Load average (1/5/15 min) at start "
        f"{env['loadavg_start']}, at end {env.get('loadavg_end')}.",
        "",
        "Command: `" + display_command() + "`",
        "",
        "## Servers",
        "",
        *(f"- **{SPECS[k].label}**: `{cmd}`{settings_note(k)}" for k, cmd in commands.items()),
        "",
        SERVERS_NOTE,
        "",
        answers_line(checks),
        "",
    ]
    order = [k for k in args.servers if k in commands]
    for tool in ("load.py", "perf_analyzer"):
        lines += tool_section(tool, rows, order, winners)
    lines += [PERF_ANALYZER_NOTE, ""]
    lines += failures_section(failures, blank_after=True)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--servers",
        type=csv_list(str, tuple(SPECS)),
        default=DEFAULT_SERVERS,
        help=f"comma-separated, measured in this order in round 1; from {', '.join(SPECS)}",
    )
    p.add_argument("--concurrency", type=csv_list(int), default=[32])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="tiny", choices=["tiny", "medium", "heavy"])
    p.add_argument("--threads", type=int, default=4, help="bare thread-pool size")
    p.add_argument("--duration", dest="load_duration", type=float, default=10.0)
    p.add_argument("--warmup", dest="load_warmup", type=float, default=2.0)
    p.add_argument("--no-perf-analyzer", action="store_true")
    add_perf_analyzer_args(p, window_ms=5000)
    p.add_argument("--gateway-args", default="", help="extra flags for every onnxgate serve")
    p.add_argument("--python", default=sys.executable, help="interpreter for bare and load.py")
    p.add_argument("--base-python", default="python3", help="creates the peers' virtualenvs")
    p.add_argument("--venvs", type=Path, default=ROOT / ".venv-peers")
    p.add_argument("--setup-only", action="store_true", help="install the peers, then stop")
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--out", type=Path, default=HERE / "out" / "peers.md")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def run_all(
    args: argparse.Namespace, pythons: dict[str, Path], work: Path, failures: list[str]
) -> tuple[list[Run], list[Check], dict[str, str]]:
    """Build the model, start the servers, check their answers, measure every round."""
    repo = work / "repo"
    build_repository(repo, [args.model])
    reference = BareModel(args.model, repo / args.model / "1" / "model.onnx")
    runs: list[Run] = []
    checks: list[Check] = []
    with contextlib.ExitStack() as stack:
        servers = start_servers(args, pythons, reference, repo, work, stack, failures)
        # The command lines without the leading "taskset -c N".
        commands = {s.kind: shlex.join(cast(list[str], s.proc.args)[3:]) for s in servers}
        if not servers:
            return runs, checks, commands
        checks = [check_answer(s, args, reference) for s in servers]
        measure_rounds(servers, args, work, runs)
    return runs, checks, commands


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = parse_args(argv)
    env = start_run(take_sigint=True)
    failures: list[str] = []
    pythons = prepare_venvs(args, env, failures)
    if args.setup_only:
        print(json.dumps({k: env[k] for k in VENVS if k in env}, indent=2))
        return 1 if failures else 0
    runs: list[Run] = []
    checks: list[Check] = []
    commands: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="onnxgate-peers-") as tmp:
        try:
            runs, checks, commands = run_all(args, pythons, Path(tmp), failures)
        except WrongAnswer as err:
            failures.append(f"wrong answer, nothing measured: {err}")
            print(f"   FAILED: {failures[-1]}", flush=True)
    env["loadavg_end"] = load_average()
    failures += [f"{r.server} {r.tool} c={r.concurrency}: {r.error}" for r in runs if r.error]
    rows = run_medians(runs)
    winners = add_best_peer_ratios(rows, runs)
    text = report(args, env, commands, checks, rows, winners, failures)
    return finish(
        args, env, text, failures,
        servers={k: {**asdict(SPECS[k]), "command": c} for k, c in commands.items()},
        checks=[asdict(c) for c in checks],
        medians=rows,
        best_peer_per_round=winners,
        runs=[asdict(r) for r in runs],
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
