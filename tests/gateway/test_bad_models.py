"""A bad model never freezes the gateway: a warm-up that never ends, one that would need more
memory than the machine has, a run that outlives its deadline. Real gateways, a real
redis-server, models built with onnx.helper, a client sending all along."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from gateway.settings import Settings
from registry_client.cli.main import main as gatectl
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Shadow, Split
from tests.support.gateways import eventually, make_gateway
from tests.support.traffic import ROW, Traffic, register_tiny
from tests.support.wire import infer_request


@pytest.fixture
def registry(redis_server, tmp_path: Path) -> Iterator[RegistryClient]:
    client = register_tiny(redis_server.url, tmp_path / "artifacts")
    yield client
    client.close()


def _gateway(redis_server, **overrides: object) -> Gateway:
    return make_gateway(None, redis_url=redis_server.url, rules_poll_seconds=0.2,
                        heartbeat_seconds=0.3, **overrides)  # fmt: skip


def _states(registry: RegistryClient, replica: str) -> dict[str, dict[str, object]]:
    report = registry.replica_status("tiny")
    (mine,) = [r for r in report["replicas"] if r["replica"] == replica]
    return {"_": mine, **{v["version"]: v for v in mine["version_states"]}}


def _probe_children() -> list[int]:
    """Memory-probe processes still alive (of any gateway in this test process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"memory_probe_child" in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("probe", ["probe", "no-probe"])
def test_a_back_out_applies_at_once_while_a_canary_warms_up_for_ever(redis_server, registry, probe):
    memory = -1 if probe == "probe" else 0  # the warm-up hangs in the probe's child, or here
    gateway = _gateway(redis_server, load_timeout_seconds=600, max_version_memory_bytes=memory)
    traffic = Traffic(f"127.0.0.1:{gateway.grpc_port}", "tiny")
    try:
        registry.set_route("tiny", [Split("1", 90), Split("2", 10)], actor="ops")

        def loading() -> bool:
            states = _states(registry, gateway.replica)
            return (
                states.get("2", {}).get("state") == "LOADING"
                and states["_"]["target_revision"] == 2
            )

        eventually(loading)

        def seconds_loading() -> float:
            return float(str(_states(registry, gateway.replica)["2"]["loading_seconds"]))

        # The heartbeat keeps going while the warm-up runs: the elapsed time grows.
        eventually(lambda: seconds_loading() >= 1.5)
        states = _states(registry, gateway.replica)
        assert states["_"]["applied_revision"] == 1
        assert states["1"]["state"] == "READY"
        out = io.StringIO()
        assert gatectl(["--redis-url", redis_server.url, "route", "status", "tiny"], {}, out) == 0
        (row,) = [line.split() for line in out.getvalue().splitlines() if gateway.replica in line]
        _, applied, target, *versions = row[:-1]
        assert (applied, target) == ("1", "2")
        assert versions[0].startswith("1:READY") and versions[1].startswith("2:LOADING(")

        written = time.monotonic()  # from the operator's write, as gatectl makes it
        rule = registry.set_route("tiny", [Split("1", 100)], actor="ops", reason="back out")
        eventually(lambda: gateway.routes.current().routes["tiny"].revision == rule.revision)
        applied_after = time.monotonic() - written
        print(f"back-out applied {applied_after * 1000:.1f} ms after it was written ({probe})")
        assert applied_after < 1.0, f"back-out applied after {applied_after:.2f} s"
        # The canary's load was cancelled: nothing of it is left loading, nor its probe.
        eventually(lambda: "2" not in _states(registry, gateway.replica))
        eventually(lambda: not _probe_children())
        codes = traffic.stop()
        assert set(codes) == {"OK"} and codes["OK"] > 50
    finally:
        traffic.stop()
        gateway.stop(grace_seconds=1)


@pytest.mark.parametrize("probe", ["probe", "no-probe"])
def test_a_warm_up_over_the_load_timeout_fails_the_version_and_the_last_rule_serves(
    redis_server, registry, probe
):
    memory = -1 if probe == "probe" else 0
    gateway = _gateway(redis_server, load_timeout_seconds=2, max_version_memory_bytes=memory)
    traffic = Traffic(f"127.0.0.1:{gateway.grpc_port}", "tiny")
    health = health_pb2_grpc.HealthStub(traffic._channel)
    try:
        started = time.monotonic()
        registry.set_route("tiny", [Split("1", 90), Split("2", 10)], actor="ops")
        eventually(lambda: _states(registry, gateway.replica).get("2", {}).get("state")
                   == "FAILED", timeout=20)  # fmt: skip
        failed_after = time.monotonic() - started
        states = _states(registry, gateway.replica)
        reason = str(states["2"]["reason"])
        assert "did not finish within the load timeout of 2 s (--load-timeout-seconds)" in reason
        print(f"FAILED in route status {failed_after:.2f} s after the rule ({probe})")
        assert failed_after < 2 + 1 + 3, f"FAILED after {failed_after:.1f} s"  # + grace + polls
        assert states["_"]["applied_revision"] == 1
        assert "revision 2 not applied" in str(states["_"]["error"])
        samples = {"model": "tiny", "version": "2", "reason": "timeout"}
        assert gateway.registry.get_sample_value("onnxgate_model_load_failures_total",
                                                 samples) == 1  # fmt: skip
        # A failed candidate leaves the replica ready: the last good rule serves.
        for service in ("", "inference.GRPCInferenceService", "liveness"):
            check = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert check.status == health_pb2.HealthCheckResponse.SERVING, service
        time.sleep(0.5)  # traffic after the failure, too
        codes = traffic.stop()
        assert set(codes) == {"OK"} and codes["OK"] > 50
        eventually(lambda: not _probe_children())
    finally:
        traffic.stop()
        gateway.stop(grace_seconds=1)


def test_a_run_that_outlives_its_deadline_is_stopped_and_its_thread_freed(redis_server, registry):
    registry.set_route("tiny", [Split("1", 100)], [Shadow("3", 100)], actor="ops")
    gateway = _gateway(redis_server, grpc_threads=2, max_version_memory_bytes=0,
                       shadow_timeout_seconds=0.5, shadow_max_cpu_busy=1.0)  # fmt: skip
    traffic = Traffic(f"127.0.0.1:{gateway.grpc_port}", "tiny")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(4):  # twice the request threads: each must have been given back
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as err:
                    stub.ModelInfer(infer_request("tiny", ROW, version="3"), timeout=1)
                assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
                answered = time.monotonic() - started
                print(f"DEADLINE_EXCEEDED after {answered:.3f} s (deadline 1 s)")
                assert answered < 5
        labels = {"model": "tiny", "version": "3", "role": "primary"}
        eventually(lambda: (gateway.registry.get_sample_value(
            "onnxgate_model_runs_terminated_total", labels) or 0) >= 4)  # fmt: skip
        shadow = {**labels, "role": "shadow"}
        eventually(lambda: (gateway.registry.get_sample_value(
            "onnxgate_model_runs_terminated_total", shadow) or 0) >= 1)  # fmt: skip
        codes = traffic.stop()
        assert set(codes) == {"OK"} and codes["OK"] > 20
    finally:
        traffic.stop()
        gateway.stop(grace_seconds=1)


def test_liveness_and_readiness_through_start_load_failure_redis_loss_and_drain(
    redis_server, registry
):
    registry.set_route("tiny", [Split("2", 100)], actor="ops")  # its only version never warms
    settings = Settings(host="127.0.0.1", grpc_port=0, metrics_port=-1, log_format="text",
                        redis_url=redis_server.url, rules_poll_seconds=0.2,
                        heartbeat_seconds=0.3, load_timeout_seconds=2,
                        max_version_memory_bytes=0, drain_notice_seconds=2.0)  # fmt: skip
    gateway = Gateway(settings, CollectorRegistry())
    gateway.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    health = health_pb2_grpc.HealthStub(channel)
    serving, not_serving = "SERVING", "NOT_SERVING"

    def probes() -> tuple[str, str, str]:
        names = ("", "inference.GRPCInferenceService", "liveness")
        request = health_pb2.HealthCheckRequest
        answers = [health.Check(request(service=n), timeout=5).status for n in names]
        whole, service, live = (
            health_pb2.HealthCheckResponse.ServingStatus.Name(a) for a in answers
        )
        return whole, service, live

    try:
        # Loading its only version: alive, not ready.
        eventually(lambda: gateway.versions.is_loading("tiny"))
        assert probes() == (not_serving, not_serving, serving)
        # That version failed and no rule of the model ever served: still alive, not ready.
        eventually(lambda: gateway.loaded.is_set(), timeout=15)
        assert probes() == (not_serving, not_serving, serving)
        # A good rule serves: ready.
        registry.set_route("tiny", [Split("1", 100)], actor="ops")
        eventually(lambda: probes() == (serving, serving, serving))
        # A candidate that fails to load leaves the replica ready on the last good rule.
        registry.set_route("tiny", [Split("1", 90), Split("2", 10)], actor="ops")
        watcher = gateway.watcher
        assert watcher is not None
        eventually(lambda: "revision" in watcher.published.errors.get("tiny", ""), timeout=15)
        assert probes() == (serving, serving, serving)
        # Redis gone: the last good rules serve; alive and ready.
        redis_server.stop()
        eventually(lambda: gateway.registry.get_sample_value("onnxgate_redis_connected") == 0)
        assert probes() == (serving, serving, serving)
        # Draining: not ready, alive (a restart would only cut the drain short).
        stopping = threading.Thread(target=gateway.stop, kwargs={"grace_seconds": 5})
        stopping.start()
        eventually(lambda: probes() == (not_serving, not_serving, serving))
        stopping.join(15)
        assert not stopping.is_alive()
    finally:
        channel.close()
        gateway.stop(grace_seconds=1)
