"""Readiness, health transitions and graceful drain, as operators and balancers see them."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.api.health import HealthService, ServingState
from gateway.cli import main
from tests.support import onnx_models
from tests.support.gateways import make_gateway
from tests.support.wire import infer_request

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SLOW_ROWS = 8192


def _status(servicer: HealthService, service: str = "") -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return int(servicer.Check(request, None).status)  # type: ignore[arg-type]  # context unused


def test_serving_state_starts_not_serving_then_follows_readiness():
    servicer = HealthService(["svc"])
    state = ServingState(servicer)
    assert (_status(servicer), _status(servicer, "svc"), state.is_ready()) == (
        NOT_SERVING, NOT_SERVING, False,
    )  # fmt: skip
    state.mark_ready(True)
    assert (_status(servicer), _status(servicer, "svc"), state.is_ready()) == (
        SERVING, SERVING, True,
    )  # fmt: skip


def test_draining_is_final():
    servicer = HealthService(["svc"])
    state = ServingState(servicer)
    state.mark_ready(True)
    state.mark_draining()
    state.mark_ready(True)
    assert (_status(servicer), _status(servicer, "svc"), state.is_ready()) == (
        NOT_SERVING, NOT_SERVING, False,
    )  # fmt: skip


def test_model_that_fails_to_load_keeps_the_gateway_not_ready(tmp_path):
    onnx_models.save(onnx_models.classifier(), tmp_path, "good", "1")
    broken = tmp_path / "broken" / "1" / "model.onnx"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not an onnx model")
    gateway = make_gateway(tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert not stub.ServerReady(pb.ServerReadyRequest()).ready
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert check.status == NOT_SERVING
            index = stub.RepositoryIndex(pb.RepositoryIndexRequest())
            failed = next(m for m in index.models if m.name == "broken")
            assert failed.state == "UNAVAILABLE"
            assert "onnxruntime rejected the model" in failed.reason
            assert str(tmp_path) not in failed.reason  # no paths reach clients
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(infer_request("broken", {"x": np.ones(1, np.float32)}, version="1"))
            assert err.value.code() is grpc.StatusCode.UNAVAILABLE
            ok = stub.ModelInfer(infer_request("good", {"input": np.ones((1, 4), np.float32)}))
            assert ok.model_version == "1"
    finally:
        gateway.stop(grace_seconds=1)


def test_highest_ready_version_serves_when_the_newest_fails(tmp_path):
    onnx_models.save(onnx_models.classifier(), tmp_path, "m", "1")
    onnx_models.save(onnx_models.classifier(), tmp_path, "m", "10")
    (tmp_path / "m" / "10" / "model.onnx").write_bytes(b"truncated")
    onnx_models.save(onnx_models.classifier(), tmp_path, "m", "9")
    gateway = make_gateway(tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            response = stub.ModelInfer(infer_request("m", {"input": np.ones((1, 4), np.float32)}))
            assert response.model_version == "9"  # numeric order: 9 < 10, and 10 failed
    finally:
        gateway.stop(grace_seconds=1)


def test_badly_named_folders_are_skipped(tmp_path):
    onnx_models.save(onnx_models.classifier(), tmp_path, "ok", "1")
    onnx_models.save(onnx_models.classifier(), tmp_path, "bad name", "1")
    onnx_models.save(onnx_models.classifier(), tmp_path, "ok", "v 2")
    gateway = make_gateway(tmp_path)
    try:
        names = {(s.model, s.version) for s in gateway.versions.statuses()}
        assert names == {("ok", "1")}
    finally:
        gateway.stop(grace_seconds=1)


def _inflight(metrics_port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    for line in body.decode().splitlines():
        if line.startswith('onnxgate_inflight_requests{model="slow"}'):
            return float(line.split()[-1])
    return 0.0


def _watch_health(address: str, seen: queue.Queue[int]) -> None:
    with grpc.insecure_channel(address) as channel:
        try:
            for response in health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=60
            ):
                seen.put(response.status)
        except grpc.RpcError:
            seen.put(-1)  # the server went away: the stream ends


@pytest.mark.timeout(120)
def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path, gateway_process):
    onnx_models.save(onnx_models.slow(), tmp_path, "slow", "1")
    onnx_models.save(onnx_models.classifier(), tmp_path, "classifier", "1")
    gp = gateway_process(tmp_path, "--max-batch-size", str(SLOW_ROWS))
    options = [("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(gp.address, options=options) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        deadline = time.monotonic() + 30
        while not stub.ServerReady(pb.ServerReadyRequest()).ready:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        statuses: queue.Queue[int] = queue.Queue()
        threading.Thread(target=_watch_health, args=(gp.address, statuses), daemon=True).start()
        assert statuses.get(timeout=10) == SERVING

        slow = infer_request("slow", {"x": np.ones((SLOW_ROWS, 256), np.float32)})
        in_flight = [stub.ModelInfer.future(slow) for _ in range(3)]
        deadline = time.monotonic() + 10
        while _inflight(gp.metrics_port) < 3:
            assert time.monotonic() < deadline, "requests did not start"
            time.sleep(0.01)

        gp.process.send_signal(signal.SIGTERM)
        assert statuses.get(timeout=10) == NOT_SERVING

        fast = infer_request("classifier", {"input": np.ones((1, 4), np.float32)})
        with pytest.raises(grpc.RpcError) as refused:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                stub.ModelInfer(fast, timeout=5)  # accepted only until the drain closes intake
        # UNAVAILABLE once intake is closed; a call that raced into gRPC core's queue of
        # not-yet-dispatched calls at that instant is CANCELLED by core, before any handler.
        assert refused.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}

        assert [f.result(timeout=60).model_version for f in in_flight] == ["1", "1", "1"]
    assert gp.process.wait(timeout=30) == 0
    assert any('"gateway stopped"' in line for line in gp.log)


def test_sigterm_on_an_idle_gateway_exits_zero_quickly(tmp_path, gateway_process):
    onnx_models.save(onnx_models.classifier(), tmp_path, "classifier", "1")
    gp = gateway_process(tmp_path)
    started = time.monotonic()
    assert gp.terminate() == 0
    assert time.monotonic() - started < 10


def test_probe_exits_zero_on_a_serving_gateway_and_one_elsewhere(gateway, capsys):
    assert main(["probe", "--address", f"127.0.0.1:{gateway.grpc_port}"]) == 0
    assert "SERVING" in capsys.readouterr().out
    assert main(["probe", "--address", "127.0.0.1:1", "--timeout", "0.5"]) == 1


def test_probe_without_flags_probes_the_port_its_environment_configures(gateway, capsys):
    env = {"ONNXGATE_GRPC_PORT": str(gateway.grpc_port)}
    assert main(["probe", "--service", "liveness"], env) == 0
    assert capsys.readouterr().out == f"127.0.0.1:{gateway.grpc_port}: SERVING\n"
    assert main(["probe", "--timeout", "0.5"], {"ONNXGATE_GRPC_PORT": "1"}) == 1


def test_probe_loads_neither_onnxruntime_nor_redis():
    # A container probe runs every few seconds: it must start in a fraction of a second.
    script = (
        "import sys; from gateway.cli import main; main(['probe', '--timeout', '0.2']);"
        " print(sorted(m for m in ('onnxruntime', 'redis', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "ONNXGATE_GRPC_PORT": "1"}, timeout=30)  # fmt: skip
    assert result.stdout.splitlines()[-1] == "[]", result.stderr


def test_stop_ends_the_load_executor_and_the_metrics_endpoint(tmp_path):
    onnx_models.save(onnx_models.classifier(), tmp_path, "classifier", "1")
    before = set(threading.enumerate())  # other tests' gateways may still be running
    gateway = make_gateway(tmp_path)
    metrics_url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    assert urllib.request.urlopen(metrics_url, timeout=5).status == 200
    gateway.stop(grace_seconds=1)
    started = set(threading.enumerate()) - before
    assert not [t for t in started if t.name.startswith("onnxgate-load")]
    with pytest.raises(OSError):
        urllib.request.urlopen(metrics_url, timeout=2)
