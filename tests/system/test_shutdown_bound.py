"""Gateway processes facing bad models: SIGTERM ends one within drain notice + grace + 2 s
whatever it is doing (a warm-up that never ends, here or in the memory probe, a run past its
grace, Redis gone), and a version that would need ~8 GB is refused while it hardly grows."""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.models.memory_probe import default_memory_budget
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.gateways import GatewayProcess, eventually
from tests.support.traffic import Traffic, register_tiny
from tests.support.wire import infer_request

NOTICE, GRACE = 0.5, 2.0
BOUND = NOTICE + GRACE + 2.0


def _stop_within_bound(gateway: GatewayProcess) -> float:
    started = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    code = gateway.process.wait(timeout=BOUND + 10)
    took = time.monotonic() - started
    print(f"exit code {code} {took:.2f} s after SIGTERM (bound {BOUND} s)")
    assert code == 0
    assert took < BOUND, f"SIGTERM took {took:.2f} s, bound {BOUND} s"
    log = "".join(gateway.log)
    assert '"draining"' in log and '"gateway stopped"' in log
    assert "overran its bound" not in log  # every step was bounded; the watchdog stayed idle
    return took


@pytest.mark.parametrize(
    "state", ["warm-up here", "warm-up in the probe", "run past the grace", "redis gone"]
)
def test_sigterm_ends_the_gateway_within_its_bound(state, redis_server, gateway_process, tmp_path):
    registry = register_tiny(redis_server.url, tmp_path / "artifacts")
    empty = tmp_path / "empty"
    empty.mkdir()
    memory = "0" if state == "warm-up here" else "-1"
    gateway = gateway_process(
        empty, "--redis-url", redis_server.url, "--load-timeout-seconds", "600",
        "--max-version-memory-bytes", memory, "--shutdown-grace-seconds", str(GRACE),
        "--drain-notice-seconds", str(NOTICE), "--rules-poll-seconds", "0.2",
        "--heartbeat-seconds", "0.3",
    )  # fmt: skip
    try:
        eventually(lambda: any('"rule applied"' in line for line in gateway.log), timeout=30)
        if state.startswith("warm-up"):
            registry.set_route("tiny", [Split("1", 90), Split("2", 10)], actor="ops")
            eventually(lambda: _loading(registry, "2"), timeout=30)
        elif state == "run past the grace":
            answered = threading.Event()

            def call_forever_model() -> None:
                with grpc.insecure_channel(gateway.address) as channel:
                    stub = pb_grpc.GRPCInferenceServiceStub(channel)
                    row = {"input": np.ones((1, 4), np.float32)}
                    try:
                        stub.ModelInfer(infer_request("tiny", row, version="3"), timeout=60)
                    except grpc.RpcError:
                        pass
                    answered.set()

            registry.set_route("tiny", [Split("1", 100), Split("3", 0)], actor="ops")
            eventually(lambda: _ready(registry, "3"), timeout=30)
            threading.Thread(target=call_forever_model, daemon=True).start()
            eventually(lambda: _inflight(gateway) > 0, timeout=10)
        else:
            redis_server.stop()
        _stop_within_bound(gateway)
    finally:
        registry.close()


def _loading(registry: RegistryClient, version: str) -> bool:
    return any(v["version"] == version and v["state"] == "LOADING"
               for r in registry.replica_status("tiny")["replicas"]
               for v in r["version_states"])  # fmt: skip


def _ready(registry: RegistryClient, version: str) -> bool:
    return any(v["version"] == version and v["state"] == "READY"
               for r in registry.replica_status("tiny")["replicas"]
               for v in r["version_states"])  # fmt: skip


def _inflight(gateway: GatewayProcess) -> float:
    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("onnxgate_inflight_requests{"))  # fmt: skip


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_a_memory_bomb_fails_with_default_settings_and_the_gateway_hardly_grows(
    redis_server, gateway_process, tmp_path
):
    registry = register_tiny(redis_server.url, tmp_path / "artifacts")
    # ~8 GiB, or more where a quarter of the memory (the default budget) would let 8 through.
    gib = max(8.0, default_memory_budget() / 2**30 + 2)
    path = onnx_models.save(onnx_models.memory_bomb(gib), tmp_path / "artifacts", "tiny", "4")
    registry.register_version("tiny", "4", path, actor="ops")
    empty = tmp_path / "empty"
    empty.mkdir()
    gateway = gateway_process(empty, "--redis-url", redis_server.url, "--rules-poll-seconds",
                              "0.2", "--heartbeat-seconds", "0.3")  # fmt: skip
    try:
        eventually(lambda: any('"rule applied"' in line for line in gateway.log), timeout=30)
        traffic = Traffic(gateway.address, "tiny")
        eventually(lambda: traffic.codes["OK"] > 20)
        rss_before = _memory_kib(gateway.process.pid, "VmRSS")
        registry.set_route("tiny", [Split("1", 90), Split("4", 10)], actor="ops")
        eventually(lambda: _failed_reason(registry, "4") != "", timeout=60)
        reason = _failed_reason(registry, "4")
        assert "needs more than the version memory budget" in reason, reason
        peak = _memory_kib(gateway.process.pid, "VmHWM")  # the process's high-water mark
        print(f"{gib:.1f} GiB bomb FAILED: {reason}; gateway RSS {rss_before >> 10} MiB before,"
              f" peak {peak >> 10} MiB")  # fmt: skip
        assert (peak - rss_before) * 1024 < 100 * 2**20, f"grew {(peak - rss_before) >> 10} MiB"
        codes = traffic.stop()
        assert set(codes) == {"OK"}, codes
    finally:
        registry.close()


def _failed_reason(registry: RegistryClient, version: str) -> str:
    return next((str(v["reason"]) for r in registry.replica_status("tiny")["replicas"]
                 for v in r["version_states"]
                 if v["version"] == version and v["state"] == "FAILED"), "")  # fmt: skip
