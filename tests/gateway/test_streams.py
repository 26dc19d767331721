"""ModelStreamInfer: open streams hold threads of their own, within a limit."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from tests.support.gateways import eventually, make_gateway
from tests.support.wire import infer_request

pytestmark = pytest.mark.timeout(60)
REQUEST = infer_request("classifier", {"input": np.ones((1, 4), np.float32)}, version="1")


def _requests(feed: queue.Queue[pb.ModelInferRequest | None]) -> Iterator[pb.ModelInferRequest]:
    while (item := feed.get()) is not None:
        yield item


class _Stream:
    """One open stream that answers each request put into it."""

    def __init__(self, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
        self.feed: queue.Queue[pb.ModelInferRequest | None] = queue.Queue()
        self.call = stub.ModelStreamInfer(_requests(self.feed), timeout=30)
        self._answers = iter(self.call)

    def ask(self) -> pb.ModelStreamInferResponse:
        self.feed.put(REQUEST)
        return next(self._answers)

    def close(self) -> None:
        self.feed.put(None)


@pytest.fixture
def small_gateway(model_repo):
    gateway = make_gateway(model_repo, grpc_threads=2, max_streams=3)
    yield gateway
    gateway.stop(grace_seconds=1)


def test_open_streams_do_not_take_the_threads_of_unary_calls(small_gateway):
    with grpc.insecure_channel(f"127.0.0.1:{small_gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        streams = [_Stream(stub) for _ in range(3)]
        for stream in streams:  # all three open and served, more than the 2 request threads
            assert stream.ask().infer_response.model_name == "classifier"
        for _ in range(5):  # while they stay open, unary calls are still answered
            assert stub.ModelInfer(REQUEST, timeout=5).model_name == "classifier"
        for stream in streams:
            assert stream.ask().error_message == ""
            stream.close()


def test_a_stream_beyond_the_limit_is_refused_at_once_and_a_closed_one_frees_its_slot(
    small_gateway,
):
    with grpc.insecure_channel(f"127.0.0.1:{small_gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        streams = [_Stream(stub) for _ in range(3)]
        for stream in streams:
            stream.ask()
        extra = _Stream(stub)
        with pytest.raises(grpc.RpcError) as refused:
            extra.ask()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "already has 3 ModelStreamInfer streams open (--max-streams)" in str(
            refused.value.details()
        )
        streams[0].close()
        assert list(streams[0].call) == []

        def another_is_accepted() -> bool:
            try:
                return _Stream(stub).ask().infer_response.model_name == "classifier"
            except grpc.RpcError:
                return False

        eventually(another_is_accepted, timeout=10)
        for stream in streams[1:]:
            stream.close()


def test_clients_cancelling_their_streams_are_not_internal_errors(small_gateway, caplog):
    caplog.set_level(logging.INFO)
    with grpc.insecure_channel(f"127.0.0.1:{small_gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        # gRPC ends a cancelled stream's requests either with an RpcError (error mapping
        # must see a client gone, not a failure) or as a plain end: five tries meet the first.
        for _ in range(5):
            stream = _Stream(stub)
            stream.ask()
            time.sleep(0.1)
            stream.call.cancel()
        # Every slot is freed again: a full set of new streams is served.
        eventually(lambda: _serves_streams(stub, 3), timeout=10)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _serves_streams(stub: pb_grpc.GRPCInferenceServiceStub, count: int) -> bool:
    streams = [_Stream(stub) for _ in range(count)]
    try:
        return all(s.ask().infer_response.model_name == "classifier" for s in streams)
    except grpc.RpcError:
        return False
    finally:
        for s in streams:
            s.close()


def test_one_connection_cannot_open_more_streams_than_its_share(model_repo):
    gateway = make_gateway(model_repo, max_streams_per_connection=2, max_streams=4)
    address = f"127.0.0.1:{gateway.grpc_port}"
    try:
        with (
            grpc.insecure_channel(address) as busy,
            grpc.insecure_channel(
                address, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as other,
        ):
            stub = pb_grpc.GRPCInferenceServiceStub(busy)
            streams = [_Stream(stub) for _ in range(2)]
            for stream in streams:
                stream.ask()
            # A third call on the same connection waits for one of its streams to end ...
            waiting = stub.ModelInfer.future(REQUEST, timeout=10)
            time.sleep(0.5)
            assert not waiting.done()
            # ... while other connections are served at once.
            answer = pb_grpc.GRPCInferenceServiceStub(other).ModelInfer(REQUEST, timeout=5)
            assert answer.model_name == "classifier"
            streams[0].close()
            assert waiting.result().model_name == "classifier"
            streams[1].close()
    finally:
        gateway.stop(grace_seconds=1)
