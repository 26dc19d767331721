"""Keepalive: a client that vanishes gives its stream's thread back; a client that pings too
often is disconnected, one that pings as allowed is not."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from tests.support.fault_proxy import FaultProxy
from tests.support.gateways import eventually, make_gateway
from tests.support.wire import infer_request

REQUEST = infer_request("classifier", {"input": np.ones((1, 4), np.float32)})


def _held_stream(
    stub: pb_grpc.GRPCInferenceServiceStub, requests: queue.SimpleQueue[pb.ModelInferRequest | None]
) -> Iterator[pb.ModelStreamInferResponse]:
    def pending() -> Iterator[pb.ModelInferRequest]:
        while (request := requests.get()) is not None:
            yield request

    return iter(stub.ModelStreamInfer(pending()))


@pytest.mark.timeout(60)
def test_a_vanished_client_gives_its_stream_slot_back(model_repo: Path):
    gateway = make_gateway(model_repo, keepalive_seconds=0.5, keepalive_timeout_seconds=1.0)
    proxy = FaultProxy("127.0.0.1", gateway.grpc_port).start()
    requests: queue.SimpleQueue[pb.ModelInferRequest | None] = queue.SimpleQueue()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
            responses = _held_stream(pb_grpc.GRPCInferenceServiceStub(channel), requests)
            requests.put(REQUEST)
            assert next(responses).infer_response.model_name == "classifier"
            time.sleep(2.5)  # several keepalive rounds: a live client keeps its stream
            assert gateway.servicer._open_streams == 1
            proxy.blackhole()  # the client host vanishes: no FIN, no RST, no ping answers
            vanished = time.monotonic()
            eventually(lambda: gateway.servicer._open_streams == 0, timeout=10)
            freed_after = time.monotonic() - vanished
            requests.put(None)
        print(f"KEEPALIVE vanished client: stream slot freed after {freed_after:.2f} s")
        assert freed_after < 0.5 + 1.0 + 2.0  # one idle interval, the ping timeout, slack
    finally:
        proxy.stop()
        gateway.stop(grace_seconds=1)


def _watch_survives(address: str, ping_every_ms: int, seconds: float) -> str:
    """Hold a health Watch (idle after its first message) on a channel that pings every
    `ping_every_ms`; 'open' if it is still open after `seconds`, else the code it ended with."""
    options = [
        ("grpc.keepalive_time_ms", ping_every_ms),
        ("grpc.keepalive_timeout_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    outcome: list[str] = []
    with grpc.insecure_channel(address, options=options) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())

        def follow() -> None:
            try:
                for _ in watch:
                    pass
                outcome.append("ended")
            except grpc.RpcError as exc:
                outcome.append(exc.code().name)

        follower = threading.Thread(target=follow)
        follower.start()
        follower.join(timeout=seconds)
        if follower.is_alive():
            watch.cancel()
            follower.join(timeout=5)
            return "open"
    return outcome[0]


def test_clients_that_ping_too_often_are_disconnected_and_polite_ones_are_not(model_repo):
    gateway = make_gateway(model_repo, min_client_ping_seconds=2.0)
    address = f"127.0.0.1:{gateway.grpc_port}"
    try:
        # gRPC clients send at most one ping a second whatever they are told.
        assert _watch_survives(address, ping_every_ms=1000, seconds=10) == "UNAVAILABLE"
        assert _watch_survives(address, ping_every_ms=2500, seconds=8) == "open"
        with grpc.insecure_channel(address) as channel:  # the server itself is unaffected
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelInfer(REQUEST, timeout=5).model_name == "classifier"
    finally:
        gateway.stop(grace_seconds=1)
