"""ModelStreamInfer: open streams hold threads of their own, within a limit."""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from tests.conftest import eventually, make_gateway
from tests.wire import infer_request

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

    def ask(self) -> pb.ModelStreamInferResponse:
        self.feed.put(REQUEST)
        return next(self.call)

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
        assert "already has 3 ModelStreamInfer streams open (--max-streams)" in (
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


def test_a_client_cancelling_its_stream_is_not_an_internal_error(small_gateway, caplog):
    caplog.set_level(logging.INFO)
    with grpc.insecure_channel(f"127.0.0.1:{small_gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stream = _Stream(stub)
        stream.ask()
        stream.call.cancel()
        eventually(lambda: any(r.message == "client went away" for r in caplog.records))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # Its slot is free again: three more streams fit.
    with grpc.insecure_channel(f"127.0.0.1:{small_gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        streams = [_Stream(stub) for _ in range(3)]
        assert all(s.ask().infer_response.model_name == "classifier" for s in streams)
        for s in streams:
            s.close()
