"""What a client is answered when a drain closes intake, as docs/reliability.md states it.

gRPC core, not the gateway, answers a call it has not handed to the application yet when the
server shuts down, and it answers CANCELLED. The gateway cannot prevent it: grpcio has no way
to stop listening or to send GOAWAY other than that shutdown, which first drops the calls
still queued in core. These tests pin what the retry advice relies on: a CANCELLED call never
reached the gateway, while an UNAVAILABLE one may have (its grace ran out as it was served).
When gRPC answers the queued calls UNAVAILABLE instead, the first test fails: then the advice
can drop CANCELLED.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc._cython import cygrpc  # type: ignore[attr-defined]  # channelz: calls in core

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from tests.support import onnx_models
from tests.support.gateways import eventually, make_gateway
from tests.support.wire import infer_request

# One connection per channel: grpcio shares one between channels to the same target otherwise.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
SLOW_ROWS = 8192
SLOW_LAYERS = 144  # a run of 0.6 s or more: well past the 0.2 s grace below on any host


def _server_ids() -> set[int]:
    servers = json.loads(cygrpc.channelz_get_servers(0)).get("server", [])
    return {int(s["ref"]["serverId"]) for s in servers}


def _calls_started(server_id: int) -> int:
    """Calls gRPC core has accepted from the transport, handed to the application or not."""
    data = json.loads(cygrpc.channelz_get_server(server_id))["server"]["data"]
    return int(data.get("callsStarted", 0))


def _served(gateway: Gateway) -> int:
    """Inference requests that reached the gateway's pipeline, whatever their outcome."""
    return int(
        sum(
            sample.value
            for metric in gateway.registry.collect()
            if metric.name == "onnxgate_requests"
            for sample in metric.samples
            if sample.name == "onnxgate_requests_total"
        )
    )


def _code(call: grpc.Future[pb.ModelInferResponse]) -> str:
    try:
        call.result()
    except grpc.RpcError as err:
        assert isinstance(err, grpc.Call)
        return str(err.code().name)
    return "OK"


def _classifier_gateway(repo: Path, **overrides: object) -> tuple[Gateway, int]:
    """A gateway serving model "classifier", and the channelz id of its gRPC server."""
    onnx_models.save(onnx_models.classifier(), repo, "classifier", "1")
    before = _server_ids()
    gateway = make_gateway(repo, **overrides)
    (server_id,) = _server_ids() - before
    return gateway, server_id


def test_a_call_still_queued_in_grpc_core_when_intake_closes_is_cancelled_unserved(tmp_path):
    gateway, server_id = _classifier_gateway(tmp_path)
    request = infer_request("classifier", {"input": np.ones((1, 4), np.float32)})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ModelInfer(request, timeout=30).model_version == "1"
            started = _calls_started(server_id)
            # grpcio's server, and the gateway's ModelInfer lane, ask core for one call per
            # method at a time, and for the next one under this lock. Held here, the first of
            # two calls takes the one outstanding ask, the second stays queued in core.
            state = gateway._server._state  # type: ignore[attr-defined]
            with state.lock:
                calls = [stub.ModelInfer.future(request, timeout=30) for _ in range(2)]
                eventually(lambda: _calls_started(server_id) >= started + 2)
                gateway._server.stop(5)  # the lock is reentrant: intake closes now
            codes = sorted(_code(call) for call in calls)
    finally:
        gateway.stop(grace_seconds=1)
    assert "CANCELLED" in codes, codes
    assert set(codes) <= {"OK", "CANCELLED"}, codes
    # Only the calls that ended OK reached the gateway: the CANCELLED one never did.
    assert _served(gateway) == 1 + codes.count("OK")


def _send_until(
    stub: pb_grpc.GRPCInferenceServiceStub,
    request: pb.ModelInferRequest,
    done: Callable[[], bool],
    codes: Counter[str],
    lock: threading.Lock,
) -> None:
    while not done():
        try:
            stub.ModelInfer(request, timeout=30)
            code = "OK"
        except grpc.RpcError as err:
            assert isinstance(err, grpc.Call)
            code = err.code().name
        with lock:
            codes[code] += 1


@pytest.mark.timeout(120)
def test_under_load_through_a_drain_only_the_calls_answered_ok_reached_the_gateway(tmp_path):
    gateway, _ = _classifier_gateway(tmp_path, drain_notice_seconds=0.3)
    request = infer_request("classifier", {"input": np.ones((1, 4), np.float32)})
    stopped = threading.Event()
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    channels = [
        grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}", OWN_CONNECTION) for _ in range(3)
    ]
    stubs = [pb_grpc.GRPCInferenceServiceStub(channels[i % 3]) for i in range(6)]
    senders = [
        threading.Thread(target=_send_until, args=(stub, request, stopped.is_set, codes, lock))
        for stub in stubs
    ]
    try:
        for sender in senders:
            sender.start()
        eventually(lambda: codes["OK"] >= 200)  # the senders are in their loops
        gateway.stop(grace_seconds=5)
        eventually(lambda: codes["UNAVAILABLE"] > 0)  # and outlive the port
    finally:
        stopped.set()
        for sender in senders:
            sender.join(60)
        for channel in channels:
            channel.close()
    assert set(codes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, codes
    # Within the grace every call the gateway took was answered OK: a call that ended
    # UNAVAILABLE or CANCELLED here was never taken.
    assert _served(gateway) == codes["OK"], codes


@pytest.mark.timeout(120)
def test_a_call_still_served_when_the_grace_runs_out_ends_unavailable(tmp_path):
    onnx_models.save(onnx_models.slow(layers=SLOW_LAYERS), tmp_path, "slow", "1")
    gateway = make_gateway(tmp_path, max_batch_size=SLOW_ROWS)
    slow = infer_request("slow", {"x": np.ones((SLOW_ROWS, 256), np.float32)})
    options = [("grpc.max_send_message_length", 64 << 20)]
    stopping = threading.Thread(target=gateway.stop, kwargs={"grace_seconds": 0.2})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}", options) as channel:
            call = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer.future(slow, timeout=60)
            eventually(lambda: gateway.versions.inflight_by_model().get("slow", 0) == 1)
            started = time.monotonic()
            stopping.start()
            with pytest.raises(grpc.RpcError) as ended:
                call.result()
            cut_after = time.monotonic() - started
    finally:
        if stopping.ident is None:  # failed before the stop began
            gateway.stop(grace_seconds=1)
        else:
            stopping.join(60)
    # The handler was running, the model too: this UNAVAILABLE came after the gateway took
    # the call, cut when the grace ran out.
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
    assert ended.value.details() == "Cancelling all calls"
    assert cut_after < 5, cut_after
