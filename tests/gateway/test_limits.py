"""Admission limit, deadlines and message size limits, on a real server with a slow model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from gateway.errors import DeadlineExceeded
from tests.support import onnx_models
from tests.support.gateways import make_gateway
from tests.support.wire import infer_request

SLOW_ROWS = 8192
# Runs must last well past the 0.2 s timeouts below on any host: 48 layers took 0.19 s on a
# fast one, this depth 0.6-1.5 s on the hosts measured.
SLOW_LAYERS = 144


@pytest.fixture(scope="module")
def slow_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("slow")
    onnx_models.save(onnx_models.slow(layers=SLOW_LAYERS), repo, "slow", "1")
    onnx_models.save(onnx_models.busy(), repo, "busy", "1")
    onnx_models.save(onnx_models.classifier(), repo, "classifier", "1")
    return repo


CLIENT_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]


def _slow_request() -> pb.ModelInferRequest:
    return infer_request("slow", {"x": np.ones((SLOW_ROWS, 256), np.float32)})


def _gateway(repo: Path, **overrides: object) -> Gateway:
    return make_gateway(repo, max_batch_size=SLOW_ROWS, **overrides)


def _channel(gateway: Gateway) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}", options=CLIENT_OPTIONS)


def _wait_for(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _inflight(gateway: Gateway, model: str = "slow") -> float:
    value = gateway.registry.get_sample_value("onnxgate_inflight_requests", {"model": model})
    return value or 0.0


def _runs(gateway: Gateway, model: str = "slow") -> float:
    labels = {"model": model, "version": "1", "role": "primary"}
    value = gateway.registry.get_sample_value("onnxgate_inference_duration_seconds_count", labels)
    return value or 0.0


@pytest.fixture
def limited(slow_repo: Path) -> Iterator[tuple[Gateway, pb_grpc.GRPCInferenceServiceStub]]:
    gateway = _gateway(slow_repo, max_inflight_per_version=1, grpc_threads=4)
    with _channel(gateway) as channel:
        yield gateway, pb_grpc.GRPCInferenceServiceStub(channel)
    gateway.stop(grace_seconds=5)


def test_admission_limit_refuses_at_once_with_unavailable(limited):
    gateway, stub = limited
    first = stub.ModelInfer.future(_slow_request())
    _wait_for(lambda: _inflight(gateway) == 1)
    with pytest.raises(grpc.RpcError) as err:  # one row: refused as soon as it is decoded
        stub.ModelInfer(infer_request("slow", {"x": np.ones((1, 256), np.float32)}))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "limit of requests in flight" in str(err.value.details())
    assert not first.done()  # refused while the running one runs, not queued behind it
    assert first.result().model_version == "1"
    assert _runs(gateway) == 1


def test_other_models_are_not_limited_by_a_busy_version(limited):
    gateway, stub = limited
    first = stub.ModelInfer.future(_slow_request())
    _wait_for(lambda: _inflight(gateway) == 1)
    answer = stub.ModelInfer(infer_request("classifier", {"input": np.ones((1, 4), np.float32)}))
    assert answer.model_version == "1"
    first.result()


def test_request_whose_deadline_passed_in_the_queue_is_not_run(slow_repo):
    gateway = _gateway(slow_repo, grpc_threads=1)
    try:
        with _channel(gateway) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            first = stub.ModelInfer.future(_slow_request())
            _wait_for(lambda: _inflight(gateway) == 1)
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(_slow_request(), timeout=0.1)
            assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            first.result()
            # The only thread is free again: a later request runs, the expired one never did.
            stub.ModelInfer(infer_request("classifier", {"input": np.ones((1, 4), np.float32)}))
            assert _runs(gateway) == 1
    finally:
        gateway.stop(grace_seconds=5)


def test_without_a_client_deadline_the_servers_bounds_the_wait_and_the_run(slow_repo):
    gateway = _gateway(slow_repo, grpc_threads=1, request_timeout_seconds=0.2)
    try:
        with _channel(gateway) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            first = stub.ModelInfer.future(_slow_request())  # a run of 0.6 s or more
            _wait_for(lambda: _inflight(gateway) == 1)
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(_slow_request())  # no client deadline: the server's applies
            waited = time.monotonic() - started
            # Without the server's timeout it would wait for the thread, run and be OK. Which
            # check ends it (the wait for the thread, the one before the run, or the run
            # stopped at its deadline) is up to the scheduler; each is DEADLINE_EXCEEDED.
            assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            assert waited >= 0.15  # not refused before the server's timeout
            # The first ran past the server's timeout too: its run was stopped, not waited for.
            with pytest.raises(grpc.RpcError) as stopped:
                first.result()
            assert stopped.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            assert "the run was stopped" in str(stopped.value.details())
            assert _runs(gateway) == 0  # neither ran to the end
            _wait_for(lambda: _inflight(gateway) == 0)  # nothing holds the version any more
    finally:
        gateway.stop(grace_seconds=5)


def test_message_over_the_size_limit_is_resource_exhausted(slow_repo):
    gateway = _gateway(slow_repo, max_message_bytes=1024 * 1024)
    try:
        with _channel(gateway) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(_slow_request())
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        gateway.stop(grace_seconds=1)


def test_default_limit_accepts_messages_well_above_grpc_default(slow_repo):
    gateway = _gateway(slow_repo)
    try:
        with grpc.insecure_channel(
            f"127.0.0.1:{gateway.grpc_port}",
            options=[("grpc.max_send_message_length", 64 << 20)],
        ) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            big = np.ones((1024 * 1024 * 2, 4), np.float32)  # 32 MiB, 8x gRPC's 4 MiB default
            request = infer_request("classifier", {"input": big[:1]})
            request.inputs[0].shape[0] = big.shape[0]
            request.raw_input_contents[0] = big.tobytes()
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(request)
            # Received and decoded (not RESOURCE_EXHAUSTED): refused only by the batch limit.
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "batch-size must be <= 8192" in str(err.value.details())
    finally:
        gateway.stop(grace_seconds=1)


class _ExpiredCall:
    """What ModelInfer reads of its call: a deadline already past (so gRPC no longer counts
    the call active), no metadata, no trailer yet."""

    def time_remaining(self) -> float:
        return -0.5

    def is_active(self) -> bool:
        return False

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


def test_a_deadline_that_passed_before_the_handler_ran_is_deadline_exceeded(slow_repo):
    gateway = _gateway(slow_repo)
    try:
        request = infer_request("classifier", {"input": np.ones((1, 4), np.float32)})
        with pytest.raises(DeadlineExceeded):
            gateway.servicer.ModelInfer(request, _ExpiredCall())  # type: ignore[arg-type]
    finally:
        gateway.stop(grace_seconds=1)


@pytest.mark.timeout(180)  # ten half-second runs one at a time: 25 s seen on a busy machine
@pytest.mark.parametrize(("queue", "unavailable"), [(8, 1), (7, 2)])
def test_a_version_runs_its_limit_queues_its_queue_and_refuses_the_rest(
    slow_repo, queue, unavailable
):
    """Triton's semantics: 1 running + `queue` waiting are admitted, the rest refused at once.
    (With 10 concurrent requests: queue 8 -> 9 OK, 1 UNAVAILABLE; queue 7 -> 8 OK, 2.)"""
    gateway = _gateway(slow_repo, max_concurrency_per_version=1, max_queue_per_version=queue)
    try:
        with _channel(gateway) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            # A kilobyte each, so all ten arrive while the first runs (0.6 s or more).
            request = infer_request("busy", {"x": np.ones((1, 256), np.float32)})
            calls = [stub.ModelInfer.future(request, timeout=150) for _ in range(10)]
            codes = []
            for call in calls:
                try:
                    call.result()
                    codes.append("OK")
                except grpc.RpcError as exc:
                    codes.append(exc.code().name)
                    assert "limit of requests in flight" in str(exc.details())
        assert sorted(codes) == ["OK"] * (10 - unavailable) + ["UNAVAILABLE"] * unavailable
        assert _runs(gateway, "busy") == 10 - unavailable
    finally:
        gateway.stop(grace_seconds=5)


def test_a_request_whose_deadline_passes_in_its_version_queue_is_not_run(slow_repo):
    gateway = _gateway(slow_repo, max_concurrency_per_version=1, grpc_threads=2)
    busy = infer_request("busy", {"x": np.ones((1, 256), np.float32)})
    try:
        with _channel(gateway) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            first = stub.ModelInfer.future(busy)
            waiting = [stub.ModelInfer.future(busy, timeout=30) for _ in range(3)]
            _wait_for(lambda: _inflight(gateway, "busy") == 4)
            # The three waiting for the busy version hold no request thread: with 2 threads
            # and one running, another model is still answered while that one runs.
            stub.ModelInfer(infer_request("classifier", {"input": np.ones((1, 4), np.float32)}))
            assert not any(call.done() for call in [first, *waiting])
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(busy, timeout=0.2)
            assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            first.result()
            for call in waiting:
                call.result()
        assert _runs(gateway, "busy") == 4  # the expired one never ran
        expired = {"model": "busy", "version": "1", "role": "primary", "code": "DEADLINE_EXCEEDED"}
        assert gateway.registry.get_sample_value("onnxgate_requests_total", expired) == 1
    finally:
        gateway.stop(grace_seconds=5)
