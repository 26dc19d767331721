"""ModelInfer through the gateway's completion-queue lane: answered as grpcio's server answers
it (responses, statuses, messages, trailers), sharing its call limit, and releasing each
call's HTTP/2 stream as soon as it ends."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from tests.support import onnx_models
from tests.support.gateways import make_gateway
from tests.support.wire import infer_request

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
LARGE = [("grpc.max_receive_message_length", 64 << 20)]


@pytest.fixture(scope="module")
def both(model_repo: Path) -> Iterator[dict[str, Gateway]]:
    """The same repository served with the lane and without it."""
    gateways = {
        "lane": make_gateway(model_repo),
        "grpcio": make_gateway(model_repo, infer_lane=False),
    }
    yield gateways
    for gateway in gateways.values():
        gateway.stop(grace_seconds=1)


def _answer(gateway: Gateway, request: pb.ModelInferRequest, metadata: Any = ()) -> tuple[Any, ...]:
    """What a caller sees: the response (or the status and message) and the trailer."""
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            response, call = stub.ModelInfer.with_call(request, metadata=metadata, timeout=10)
        except grpc.RpcError as err:
            return err.code(), err.details(), _keys(err.trailing_metadata())
        serialized = response.SerializeToString(deterministic=True)
        return grpc.StatusCode.OK, serialized, _keys(call.trailing_metadata())


def _keys(metadata: Any) -> list[str]:
    """The trailer's keys (a generated request id differs from call to call)."""
    return sorted(str(item[0]) for item in metadata or ())


REQUESTS = {
    "answered": (infer_request("classifier", {"input": np.ones((3, 4), np.float32)},
                               request_id="r1"), ()),
    "pinned version": (infer_request("classifier", {"input": np.ones((1, 4), np.float32)},
                                     version="2", request_id="r2"), ()),
    "unknown model": (infer_request("nope", {"input": np.ones((1, 4), np.float32)}), ()),
    "unknown version": (infer_request("classifier", {"input": np.ones((1, 4), np.float32)},
                                      version="9"), ()),
    "wrong shape": (infer_request("classifier", {"input": np.ones((1, 5), np.float32)}), ()),
    "wrong datatype": (infer_request("classifier", {"input": np.ones((1, 4), np.int32)}), ()),
    "unknown output": (infer_request("classifier", {"input": np.ones((1, 4), np.float32)},
                                     outputs=["nope"], request_id="r3"), ()),
    "caller's request id": (infer_request("nope", {"input": np.ones((1, 4), np.float32)}),
                            (("x-request-id", "caller-7"),)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REQUESTS))
def test_the_lane_answers_as_grpcios_server_does(both: dict[str, Gateway], case: str) -> None:
    request, metadata = REQUESTS[case]
    assert _answer(both["lane"], request, metadata) == _answer(both["grpcio"], request, metadata)


def test_a_failure_names_its_request_id_in_the_trailer(both: dict[str, Gateway]) -> None:
    request, metadata = REQUESTS["caller's request id"]
    with grpc.insecure_channel(f"127.0.0.1:{both['lane'].grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata)
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    trailer: Any = err.value.trailing_metadata() or ()
    assert ("x-request-id", "caller-7") in [tuple(item) for item in trailer]


def test_a_message_that_is_not_a_request_is_invalid_argument(both: dict[str, Gateway]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{both['lane'].grpc_port}") as channel:
        raw = channel.unary_unary(MODEL_INFER, None, None)  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as err:
            raw(b"\xff\xff\xff", timeout=10)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a ModelInferRequest" in str(err.value.details())


def test_streams_are_released_without_the_garbage_collector(both: dict[str, Gateway]) -> None:
    """More calls on one connection than it may have streams open at once (128): each call's
    stream must end with the call, not when a garbage collection frees its objects."""
    request = infer_request("classifier", {"input": np.ones((1, 4), np.float32)})
    gc.disable()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{both['lane'].grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            answers = [stub.ModelInfer(request, timeout=10) for _ in range(400)]
    finally:
        gc.enable()
    assert {a.model_name for a in answers} == {"classifier"}


def test_the_lane_counts_its_calls_with_grpcios_against_max_calls(tmp_path: Path) -> None:
    """--max-calls bounds the calls of both: with the lane's calls in flight up to the limit,
    a ModelInfer and a call grpcio's server answers (ServerLive) are both refused."""
    onnx_models.save(onnx_models.slow(layers=144), tmp_path, "slow", "1")
    gateway = make_gateway(tmp_path, grpc_threads=1, max_streams=0, feedback_max_calls=1,
                           max_calls=2, max_batch_size=8192)  # fmt: skip
    slow = infer_request("slow", {"x": np.ones((8192, 256), np.float32)})  # 0.6 s or more
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}", options=LARGE) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            held: list[Any] = [stub.ModelInfer.future(slow, timeout=60) for _ in range(2)]
            _wait_for_calls(gateway, 2)
            infer = lambda: stub.ModelInfer(slow, timeout=10)  # noqa: E731
            live = lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=10)  # noqa: E731
            for refused in (infer, live):
                with pytest.raises(grpc.RpcError) as err:
                    refused()
                assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert [f.result().model_name for f in held] == ["slow", "slow"]
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live  # counted down again
    finally:
        gateway.stop(grace_seconds=5)


def _wait_for_calls(gateway: Gateway, count: int) -> None:
    """Until the server counts `count` calls in progress (grpcio's count, which the lane
    shares: read from grpcio's server state, as the lane itself does)."""
    state = gateway._server._state  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while state.active_rpc_count != count:
        assert time.monotonic() < deadline, f"{state.active_rpc_count} calls, not {count}"
        time.sleep(0.005)
