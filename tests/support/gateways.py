"""Gateways for tests: in-process, or run as `python -m gateway serve` on free ports; and the
waits tests share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
from prometheus_client import CollectorRegistry

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from gateway.settings import Settings
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from tests.support import onnx_models

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_gateway(repo: Path | None, **overrides: object) -> Gateway:
    """A started in-process gateway on free ports with its own metrics registry."""
    settings = Settings(
        models=repo,
        host="127.0.0.1",
        grpc_port=0,
        metrics_port=0,
        log_format="text",
        drain_notice_seconds=0.0,  # in-process tests stop many gateways; none is watched
        # The memory probe costs a Python start per load (about 0.3 s): in-process gateways
        # load hundreds of versions in this suite, so only the tests about it turn it on.
        max_version_memory_bytes=0,
        # Tests count the rows their sketches hold; the sampling of busy versions has its own.
        drift_max_rows_per_second=0,
    ).with_overrides(**overrides)
    gateway = Gateway(settings, CollectorRegistry())
    gateway.start()
    assert gateway.loaded.wait(30), "versions did not finish loading"
    return gateway


@dataclass
class GatewayProcess:
    """A gateway run as `python -m gateway serve`, as users run it."""

    process: subprocess.Popen[str]
    grpc_port: int
    metrics_port: int
    log: list[str]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def terminate(self) -> int:
        """Send SIGTERM and wait for the exit code; a gateway that has not exited 30 s later
        fails the test with its log."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("gateway still running 30 s after SIGTERM:\n"
                                 + "".join(self.log[-40:])) from None  # fmt: skip


def _pump(stream: IO[str], lines: list[str], started: threading.Event) -> None:
    for line in stream:
        lines.append(line)
        if '"gateway started"' in line:
            started.set()


def start_gateway_process(repo: Path, *args: str) -> GatewayProcess:
    """Start a gateway subprocess on free ports; returns once it has logged its ports."""
    # Exact sketch counts, as make_gateway's.
    command = [sys.executable, "-m", "gateway", "serve", "--models", str(repo), "--host",
               "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--log-format", "json",
               "--drift-max-rows-per-second", "0", *args]  # fmt: skip
    if not {"--redis-url", "--data-dir"} & set(args):
        command.append("--no-registry")  # serve the directory itself
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    assert process.stderr is not None
    lines: list[str] = []
    started = threading.Event()
    threading.Thread(target=_pump, args=(process.stderr, lines, started), daemon=True).start()
    if not started.wait(30):
        process.kill()
        raise AssertionError("gateway did not start:\n" + "".join(lines))
    entry = json.loads(next(line for line in lines if '"gateway started"' in line))
    return GatewayProcess(process, entry["grpc_port"], entry["metrics_port"], lines)


def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    """Poll check until it holds; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def wait_until_ready(stub: pb_grpc.GRPCInferenceServiceStub, timeout: float = 30) -> None:
    """Poll ServerReady until true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if stub.ServerReady(pb.ServerReadyRequest(), timeout=1).ready:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    raise AssertionError("gateway did not become ready")


def register_credit(registry: RegistryClient, directory: Path) -> None:
    """Model credit with versions 1 and 2 (classifiers of seeds 1 and 2), all traffic on 1."""
    registry.create_model("credit", actor="ops")
    for version in ("1", "2"):
        path = onnx_models.save(onnx_models.classifier(seed=int(version)), directory, "credit",
                                version)  # fmt: skip
        registry.register_version("credit", version, path, actor="ops")
    registry.set_route("credit", [Split("1", 100), Split("2", 0)], actor="ops")
