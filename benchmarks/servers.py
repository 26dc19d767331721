"""Servers under test: free ports, starting them pinned to the server CPU, waiting until they
serve, bounded child commands, and stopping every process a server started."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.api.transport import GRPC_EXPERIMENTS, POLLER_OWNS_SOCKETS
from registry_client.client import RegistryClient
from registry_client.errors import Unreachable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"
SERVER_CPU = "0"
CLIENT_CPU = "1"
LOG_TAIL = 600
# "bare+transport": the bare server on the gateway's gRPC transport (gateway/api/transport.py).
TRANSPORT_LAYER = "transport"


class BenchError(RuntimeError):
    """A server or a load tool failed: the run records it and carries on."""


@dataclass
class Server:
    """A server under test, started once for the whole run."""

    kind: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


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


def claim_port(taken: set[int]) -> int:
    """A free loopback port not handed out before in this run."""
    # The kernel may hand the same ephemeral port out twice once the probe socket closes.
    while (port := free_port()) in taken:
        pass
    taken.add(port)
    return port


def port_pair(taken: set[int] | None = None) -> tuple[int, int]:
    """A server's gRPC and metrics ports: two distinct free ports, neither in `taken`."""
    taken = set() if taken is None else taken
    return claim_port(taken), claim_port(taken)


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


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on a free loopback port, nothing saved, its files in `work`;
    returns it and its URL (it answers a moment later)."""
    redis_bin = shutil.which("redis-server") or sys.exit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [redis_bin, "--port", str(port), "--bind", HOST, "--save", "", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
    )
    return proc, f"redis://{HOST}:{port}/0"


def registry_when_up(url: str, timeout_s: float = 5.0) -> RegistryClient:
    """A RegistryClient on `url` once the redis-server start_redis() started answers."""
    registry = RegistryClient.from_url(url)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            registry.list_models()
            return registry
        except Unreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def stop_all(processes: list[subprocess.Popen[bytes]], timeout_s: float = 30.0) -> None:
    """SIGTERM every process, the last started first, and wait for each; SIGKILL one that has
    not exited after timeout_s."""
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()


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
def running_server(
    cmd: list[str], log_path: Path, env: dict[str, str], cpu: str | None = SERVER_CPU
) -> Iterator[Any]:
    """Start a server in its own session, pinned to `cpu` unless None; always kill its process
    group on exit."""
    pinned = ["taskset", "-c", cpu, *cmd] if cpu is not None else cmd
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            pinned,
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


def launch(
    stack: contextlib.ExitStack,
    label: str | None,
    cmd: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cpu: str | None = SERVER_CPU,
) -> subprocess.Popen[bytes]:
    """Start a server, stopped when `stack` closes; print "== label: command" unless label is
    None. The environment defaults to this process's, unbuffered."""
    if label is not None:
        print(f"== {label}: {shlex.join(cmd)}", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"} if env is None else env
    proc: subprocess.Popen[bytes] = stack.enter_context(running_server(cmd, log, env, cpu))
    return proc


def start_server(
    stack: contextlib.ExitStack,
    label: str | None,
    cmd: list[str],
    log: Path,
    port: int,
    model: str,
    ready_timeout: float,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """launch() pinned to the server CPU, then wait until it serves `model` on `port`."""
    proc = launch(stack, label, cmd, log, env)
    wait_ready(port, model, proc, ready_timeout, log)
    return proc


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes of a process group."""
    tick = os.sysconf("SC_CLK_TCK")
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid:  # state ppid pgrp ... utime stime at 11, 12
            ticks += int(fields[11]) + int(fields[12])
    return ticks / tick


def check_alive(proc: subprocess.Popen[Any], log: Path, what: str = "gateway") -> None:
    """Raise BenchError, with the end of its log, if the server has exited."""
    if proc.poll() is not None:
        raise BenchError(f"{what} exited {proc.returncode}: {tail(log.read_bytes())}")


@dataclass
class GatewayProcess:
    """A gateway started for the run: its ports, its process and its log."""

    port: int
    metrics_port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def check_alive(self) -> None:
        """Raise BenchError if the gateway has exited."""
        check_alive(self.proc, self.log)


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
    """The command line of one server under test: "gateway" (`onnxgate serve`, its private
    registry next to the repository), "gateway-aio", "bare", "bare+LAYER[+LAYER...]" (with some
    of the gateway's layers: benchmarks/bare_server.py LAYERS, or TRANSPORT_LAYER), "aio" or
    "bare-cq" (the bare handler on gRPC core's completion queue, as the gateway's lane)."""
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
    if kind == "aio":
        return [*bare, "--aio"]
    if kind == "bare-cq":  # the gateway's ModelInfer lane, with the bare handler; its transport
        cq = [args.python, str(HERE / "bare_cq_server.py"), *bare[2:]]
        return ["env", f"{GRPC_EXPERIMENTS}={POLLER_OWNS_SOCKETS}", *cq]
    bare += ["--threads", str(args.threads)]
    _, *layers = kind.split("+")
    environment = []
    if TRANSPORT_LAYER in layers:  # read by grpc core as grpcio loads: set before it starts
        layers.remove(TRANSPORT_LAYER)
        environment = ["env", f"{GRPC_EXPERIMENTS}={POLLER_OWNS_SOCKETS}"]
    return [*environment, *bare, *(["--layers", ",".join(layers)] if layers else [])]
