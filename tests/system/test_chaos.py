"""Chaos, short versions: the registry's Redis cut off from a gateway under load."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from gateway.settings import Settings
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from tests.support.fault_proxy import FaultProxy
from tests.support.gateways import eventually, make_gateway, register_credit, wait_until_ready
from tests.support.wire import infer_request

REQUEST = infer_request("credit", {"input": np.ones((1, 4), np.float32)})


def _steady_load(stub: pb_grpc.GRPCInferenceServiceStub, stop: threading.Event,
                 seen: list[tuple[str, str]]) -> None:  # fmt: skip
    while not stop.is_set():
        try:
            seen.append(("OK", stub.ModelInfer(REQUEST, timeout=5).model_version))
        except grpc.RpcError as exc:
            seen.append((exc.code().name, ""))
        time.sleep(0.005)


def _connected(gateway: Gateway) -> float | None:
    return gateway.registry.get_sample_value("onnxgate_redis_connected")


@pytest.mark.timeout(90)
def test_a_blackholed_registry_fails_no_request_and_is_followed_within_5s_of_recovery(
    redis_server, tmp_path: Path
):
    registry = RegistryClient.from_url(redis_server.url)
    register_credit(registry, tmp_path)
    proxy = FaultProxy("127.0.0.1", redis_server.port).start()
    gateway = make_gateway(
        None, redis_url=proxy.url, rules_poll_seconds=0.2, heartbeat_seconds=0.2,
        stats_flush_seconds=0.2, drift_flush_seconds=0.2,
    )  # fmt: skip
    stop = threading.Event()
    seen: list[tuple[str, str]] = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            wait_until_ready(stub)
            load = threading.Thread(target=_steady_load, args=(stub, stop, seen))
            load.start()
            eventually(lambda: len(seen) > 20)
            proxy.blackhole()
            # Changed while the gateway cannot see Redis: it keeps serving the last good rule.
            registry.set_route("credit", [Split("1", 0), Split("2", 100)], actor="ops")
            blind_from = len(seen)
            time.sleep(3)
            served_blind = len(seen) - blind_from
            assert seen[-1] == ("OK", "1")
            proxy.restore()
            restored = time.monotonic()
            eventually(lambda: seen[-1] == ("OK", "2"), timeout=5)
            resync = time.monotonic() - restored
            eventually(lambda: _connected(gateway) == 1, timeout=5)
            stop.set()
            load.join(timeout=10)
    finally:
        stop.set()
        proxy.restore()
        gateway.stop(grace_seconds=1)
        proxy.stop()
        registry.close()
    assert {code for code, _ in seen} == {"OK"}, "an inference request failed"
    assert served_blind > 20  # requests kept being answered while Redis was cut off
    assert resync < 5


def test_before_the_first_sync_requests_are_unavailable_not_unknown(redis_server):
    """A gateway that cannot reach Redis yet has no routes: clients must retry (UNAVAILABLE),
    not conclude the model does not exist (NOT_FOUND)."""
    proxy = FaultProxy("127.0.0.1", redis_server.port).start()
    proxy.blackhole()
    settings = Settings(host="127.0.0.1", grpc_port=0, metrics_port=-1, redis_url=proxy.url)
    gateway = Gateway(settings, CollectorRegistry())
    gateway.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(REQUEST, timeout=5)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert (
            refused.value.details() == "the gateway is starting and has no route for 'credit' yet"
        )
    finally:
        proxy.restore()
        gateway.stop(grace_seconds=1)
        proxy.stop()
