"""`onnxgate serve --workers N`: processes sharing one port, supervised, metrics summed."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.settings import Settings
from registry_client.cli.main import main as gatectl
from tests.support import onnx_models
from tests.support.gateways import REPO_ROOT, GatewayProcess, eventually, wait_until_ready
from tests.support.wire import infer_request
from tests.support.worker_sockets import channels_per_worker, connect_to_worker

pytestmark = pytest.mark.timeout(120)
REQUEST = infer_request("classifier", {"input": np.ones((1, 4), np.float32)})


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    onnx_models.save(onnx_models.classifier(), tmp_path / "repo", "classifier", "1")
    return tmp_path / "repo"


def _workers(gp: GatewayProcess) -> dict[int, int]:
    """worker index -> pid of its newest process, from the supervisor's log."""
    pids: dict[int, int] = {}
    for line in list(gp.log):
        if '"worker started"' in line:
            entry = json.loads(line)
            pids[entry["worker"]] = entry["pid"]
    return pids


def _running_workers(gp: GatewayProcess, count: int) -> list[int]:
    eventually(lambda: len(_workers(gp)) == count, timeout=30)
    return sorted(_workers(gp).values())


def _metric(port: int, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in body.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it is only waiting for its parent to read its exit code.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_workers_share_one_port_and_metrics_add_up_across_them(repo, gateway_process):
    gp = gateway_process(repo, "--workers", "2")
    workers = _running_workers(gp, 2)
    by_worker = channels_per_worker(gp.address, gp.grpc_port, workers, each=2)
    sent = 0
    for pid, channels in by_worker.items():
        for channel in channels:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(5 + pid % 3):
                assert stub.ModelInfer(REQUEST, timeout=10).model_name == "classifier"
                sent += 1
            channel.close()
    # One /metrics for both workers: every request counted once, whichever worker served it.
    assert _metric(gp.metrics_port, "onnxgate_requests_total", code="OK") == sent
    count = _metric(gp.metrics_port, "onnxgate_request_duration_seconds_count")
    assert count == sent
    assert _metric(gp.metrics_port, "onnxgate_workers_alive") == 2
    assert _metric(gp.metrics_port, "onnxgate_model_loaded", model="classifier") == 1
    # Each process's own figures, labelled by worker: the supervisor started before both.
    started = {w: _metric(gp.metrics_port, "process_start_time_seconds", worker=w)
               for w in ("supervisor", "0", "1")}  # fmt: skip
    assert 0 < started["supervisor"] < min(started["0"], started["1"]) <= time.time()
    assert all(_metric(gp.metrics_port, "process_resident_memory_bytes", worker=w) > 1e6
               for w in started)  # fmt: skip
    assert _metric(gp.metrics_port, "onnxgate_build_info") == 1  # once, not once per worker
    assert gp.terminate() == 0
    assert not any(_alive(pid) for pid in workers)


def _hammer(
    channel: grpc.Channel, stop: threading.Event, outcomes: list[tuple[float, str]]
) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    while not stop.is_set():
        try:
            stub.ModelInfer(REQUEST, timeout=10)
            outcomes.append((time.monotonic(), "OK"))
        except grpc.RpcError as exc:
            outcomes.append((time.monotonic(), exc.code().name))


def test_a_crashed_worker_is_restarted_and_the_others_lose_nothing(repo, gateway_process):
    gp = gateway_process(repo, "--workers", "2")
    victim, survivor = _running_workers(gp, 2)
    victim_index = str(next(index for index, pid in _workers(gp).items() if pid == victim))
    started = _metric(gp.metrics_port, "process_start_time_seconds", worker=victim_index)
    by_worker = channels_per_worker(gp.address, gp.grpc_port, [victim, survivor], each=2)
    stop = threading.Event()
    outcomes: dict[int, list[list[tuple[float, str]]]] = {victim: [], survivor: []}
    threads = []
    for pid, channels in by_worker.items():
        for channel in channels:
            seen: list[tuple[float, str]] = []
            outcomes[pid].append(seen)
            threads.append(threading.Thread(target=_hammer, args=(channel, stop, seen)))
    for thread in threads:
        thread.start()
    eventually(lambda: all(len(s) >= 20 for lists in outcomes.values() for s in lists))
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    # The supervisor starts a replacement under the same worker index.
    eventually(lambda: victim not in _workers(gp).values(), timeout=15)
    replacement = next(pid for pid in _workers(gp).values() if pid != survivor)

    def survivor_answered_since_the_kill() -> int:
        return sum(1 for seen in outcomes[survivor] for t, _ in seen if t > killed_at)

    # The survivor keeps serving while the replacement starts.
    eventually(lambda: survivor_answered_since_the_kill() >= 20)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    survivor_results = [code for seen in outcomes[survivor] for _, code in seen]
    assert set(survivor_results) == {"OK"}, "a request on a surviving worker failed"
    assert survivor_answered_since_the_kill() >= 20
    victim_before = [code for seen in outcomes[victim] for t, code in seen if t < killed_at]
    assert set(victim_before) == {"OK"}

    eventually(lambda: _metric(gp.metrics_port, "onnxgate_workers_alive") == 2, timeout=15)
    assert _metric(gp.metrics_port, "onnxgate_worker_restarts_total") == 1
    # The index keeps its series; its start time is the replacement's.
    restarted = _metric(gp.metrics_port, "process_start_time_seconds", worker=victim_index)
    assert restarted > started
    channel, pid = connect_to_worker(gp.address, gp.grpc_port, [replacement, survivor])
    with channel:  # new connections reach both workers again; the replacement serves
        assert pid in {replacement, survivor}
        wait_until_ready(pb_grpc.GRPCInferenceServiceStub(channel))
        assert pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(REQUEST, timeout=10)
    # Counters of the killed worker stay in the sum: totals never go backwards. It may have
    # counted a request whose response died with it, one per connection at most.
    answered = sum(1 for lists in outcomes.values() for s in lists for _, c in s if c == "OK")
    counted = _metric(gp.metrics_port, "onnxgate_requests_total", code="OK")
    assert answered + 1 <= counted <= answered + 1 + len(by_worker[victim])
    assert gp.terminate() == 0, "".join(gp.log)


def test_workers_leave_when_their_supervisor_is_killed(repo, gateway_process):
    gp = gateway_process(repo, "--workers", "2")
    workers = _running_workers(gp, 2)
    gp.process.kill()
    gp.process.wait(timeout=10)
    try:
        eventually(lambda: not any(_alive(pid) for pid in workers), timeout=15)
    finally:  # else they would hold the log pipe open and the fixture with it
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_port_in_use_is_refused_before_any_worker_starts(repo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--models", str(repo), "--no-registry",
             "--workers", "2", "--host", "127.0.0.1", "--grpc-port", str(port),
             "--metrics-port", "-1"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"--grpc-port {port}: Address already in use" in result.stderr
    assert '"worker started"' not in result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--workers", "0", "--workers 0: expected 1 or more"),
        ("--grpc-threads", "0", "--grpc-threads 0: expected 1 or more"),
        ("--max-streams", "-1", "--max-streams -1: expected 0 or more"),
        ("--request-timeout-seconds", "0", "--request-timeout-seconds 0.0: expected 0.001 or more"),
    ],
)
def test_counts_that_cannot_serve_are_usage_errors(repo, flag, value, message):
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--models", str(repo), flag, value],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr


def test_settings_survive_the_trip_to_a_worker_through_the_environment(tmp_path):
    settings = Settings(
        models=tmp_path, grpc_port=0, workers=3, redis_url="unix:///x?db=0",
        shutdown_grace_seconds=2.5, shadow_max_cpu_busy=0.1, replica_id="a-w1.2",
    )  # fmt: skip
    assert Settings.from_env(settings.to_env()) == settings


def _gatectl_json(url: str, *argv: str) -> Any:
    out = io.StringIO()
    assert gatectl(["--redis-url", url, "--json", *argv], {}, out, io.StringIO()) == 0
    return json.loads(out.getvalue())


def test_workers_follow_one_registry_each_as_a_replica_of_its_own(
    repo, redis_server, gateway_process
):
    gp = gateway_process(
        repo, "--workers", "2", "--redis-url", redis_server.url,
        "--stats-flush-seconds", "0.2", "--heartbeat-seconds", "0.2",
    )  # fmt: skip
    workers = _running_workers(gp, 2)
    by_worker = channels_per_worker(gp.address, gp.grpc_port, workers, each=1)
    for channels in by_worker.values():
        stub = pb_grpc.GRPCInferenceServiceStub(channels[0])
        for _ in range(3):
            assert stub.ModelInfer(REQUEST, timeout=10).model_version == "1"
        channels[0].close()
    replica = json.loads(next(line for line in gp.log if '"worker started"' in line))["replica"]
    base = replica.rsplit("-w", 1)[0]

    def reported() -> dict[str, Any]:
        rows = _gatectl_json(redis_server.url, "compare", "classifier")["versions"]
        return next(row for row in rows if row["version"] == "1" and row["role"] == "primary")

    # Imported once by the supervisor; each worker writes statistics under its own name.
    eventually(lambda: reported()["requests"] == 6, timeout=15)
    assert sorted(_gatectl_json(redis_server.url, "compare", "classifier")["replicas"]) == [
        f"{base}-w0",
        f"{base}-w1",
    ]
    assert gp.terminate() == 0
