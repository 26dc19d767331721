"""Unexpected failures answer INTERNAL with a fixed message and a request id, never details."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from tests.support import onnx_models
from tests.support.gateways import make_gateway
from tests.support.wire import infer_request

OUT_OF_TABLE = {"index": np.array([0, 7], dtype=np.int64)}


@pytest.fixture(scope="module")
def lookup_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    repo = tmp_path_factory.mktemp("lookup")
    onnx_models.save(onnx_models.lookup(), repo, "lookup", "1")
    gateway = make_gateway(repo)
    yield gateway
    gateway.stop(grace_seconds=1)


@pytest.fixture
def stub(lookup_gateway: Gateway) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{lookup_gateway.grpc_port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def test_onnxruntime_failure_is_internal_with_a_fixed_message(stub, tmp_path):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(infer_request("lookup", OUT_OF_TABLE))
    assert err.value.code() is grpc.StatusCode.INTERNAL
    assert re.fullmatch(r"internal error \(request [0-9a-f]{32}\)", str(err.value.details()))


def test_internal_error_carries_the_callers_request_id(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(
            infer_request("lookup", OUT_OF_TABLE), metadata=[("x-request-id", "abc-123")]
        )
    assert err.value.details() == "internal error (request abc-123)"


def test_internal_error_details_go_only_to_the_log(stub, caplog):
    with caplog.at_level(logging.ERROR, logger="gateway.api.error_mapping"):
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(
                infer_request("lookup", OUT_OF_TABLE), metadata=[("x-request-id", "log-1")]
            )
    assert "Gather" not in str(err.value.details())
    record = next(r for r in caplog.records if getattr(r, "request_id", "") == "log-1")
    # onnxruntime's reason is logged with the same id, on one line: a model failing on part of
    # its traffic must not fill the log with tracebacks that say nothing more.
    assert record.getMessage() == "model failed" and record.exc_info is None
    assert "Gather" in record.reason


def test_gateway_keeps_serving_after_an_internal_error(stub):
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(infer_request("lookup", OUT_OF_TABLE))
    response = stub.ModelInfer(infer_request("lookup", {"index": np.array([2], np.int64)}))
    assert response.model_version == "1"


def test_a_model_failure_in_a_stream_is_answered_in_band_and_the_stream_goes_on(stub):
    good = infer_request("lookup", {"index": np.array([1], np.int64)})
    bad = infer_request("lookup", OUT_OF_TABLE)
    answers = list(stub.ModelStreamInfer(iter([good, bad, good]), timeout=10,
                                         metadata=[("x-request-id", "stream-7")]))  # fmt: skip
    assert [a.HasField("infer_response") for a in answers] == [True, False, True]
    assert answers[1].error_message == "internal error (request stream-7)"


def test_model_failures_count_against_the_version(lookup_gateway, stub):
    labels = {"model": "lookup", "version": "1", "role": "primary", "code": "INTERNAL"}

    def failed() -> float:
        return lookup_gateway.registry.get_sample_value("onnxgate_requests_total", labels) or 0.0

    before = failed()
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(infer_request("lookup", OUT_OF_TABLE))
    assert failed() == before + 3  # a canary that errs shows it in its own error rate
