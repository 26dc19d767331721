"""A failed inference call, and every stream, carries its request id in the trailer
x-request-id, and its log lines name the same id; a successful ModelInfer answers with the
prediction's id in the response's `id` (the request's `id`, else the call's request id: the
caller's x-request-id, else a generated one) and no trailer unless the access log names it."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
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
from tests.support.triton import error, ok, run_script, running_gateway, triton_venv
from tests.support.wire import infer_request

FEATURES = {"input": np.ones((1, 4), np.float32)}
OUT_OF_TABLE = {"index": np.array([0, 7], dtype=np.int64)}  # lookup fails: INTERNAL
GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("request_ids")
    onnx_models.save(onnx_models.classifier(seed=1), repo, "classifier", "1")
    onnx_models.save(onnx_models.classifier(seed=2), repo, "classifier", "2")
    onnx_models.save(onnx_models.lookup(), repo, "lookup", "1")
    return repo


@pytest.fixture(scope="module")
def gateway(repo: Path) -> Iterator[Gateway]:
    gw = make_gateway(repo)
    yield gw
    gw.stop(grace_seconds=1)


@pytest.fixture(scope="module")
def stub(gateway: Gateway) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def trailer(call: grpc.Call | grpc.RpcError) -> str:
    """The one x-request-id value in a call's trailing metadata."""
    # (key, value) pairs at run time; the stubs type an error's differently from a call's.
    metadata: Iterable[Any] = call.trailing_metadata() or ()
    values = [v for k, v in metadata if k == "x-request-id"]
    assert len(values) == 1, f"expected one x-request-id trailer, got {values}"
    assert isinstance(values[0], str)
    return values[0]


def no_trailer(call: grpc.Call) -> bool:
    metadata: Iterable[Any] = call.trailing_metadata() or ()
    return all(key != "x-request-id" for key, _ in metadata)


def test_a_successful_answer_carries_the_requests_own_id_and_no_trailer(stub):
    request = infer_request("classifier", FEATURES, request_id="body-1")
    response, call = stub.ModelInfer.with_call(request, metadata=(("x-request-id", "trace-1"),))
    assert response.id == "body-1"  # the protocol's id is the request's, untouched
    assert no_trailer(call)


def test_without_one_a_fresh_request_id_is_generated_per_request(stub):
    request = infer_request("classifier", FEATURES)
    first = stub.ModelInfer(request)
    again = stub.ModelInfer(request)
    assert GENERATED.fullmatch(first.id)
    assert GENERATED.fullmatch(again.id)
    assert first.id != again.id


def test_without_a_body_id_the_response_carries_the_callers_x_request_id(stub):
    request = infer_request("classifier", FEATURES)
    response, call = stub.ModelInfer.with_call(request, metadata=(("x-request-id", "trace-2"),))
    assert response.id == "trace-2"
    assert no_trailer(call)


def test_an_over_long_request_id_is_cut_to_128_characters(stub):
    request = infer_request("classifier", FEATURES)
    response = stub.ModelInfer(request, metadata=(("x-request-id", "x" * 300),))
    assert response.id == "x" * 128


def test_an_error_answer_carries_the_callers_request_id(stub):
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(infer_request("absent", FEATURES), metadata=(("x-request-id", "t-404"),))
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    assert trailer(refused.value) == "t-404"


def test_an_error_answer_and_its_log_line_share_the_generated_id(stub, caplog):
    with caplog.at_level(logging.INFO, logger="gateway.api.error_mapping"):
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(infer_request("absent", FEATURES))
    request_id = trailer(refused.value)
    assert GENERATED.fullmatch(request_id)
    logged = [r for r in caplog.records if r.getMessage() == "request not served"]
    assert [getattr(r, "request_id", None) for r in logged] == [request_id]


def test_an_internal_error_names_the_trailers_id_in_its_message_and_log(stub, caplog):
    with caplog.at_level(logging.ERROR, logger="gateway.api.error_mapping"):
        with pytest.raises(grpc.RpcError) as failed:
            stub.ModelInfer(infer_request("lookup", OUT_OF_TABLE))
    request_id = trailer(failed.value)
    assert failed.value.code() is grpc.StatusCode.INTERNAL
    assert failed.value.details() == f"internal error (request {request_id})"
    assert [getattr(r, "request_id", None) for r in caplog.records] == [request_id]


def test_an_invalid_request_is_answered_with_the_id_too(stub):
    bad = infer_request("classifier", {"input": np.ones((1, 5), np.float32)})
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(bad, metadata=(("x-request-id", "t-400"),))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(refused.value) == "t-400"


def test_a_stream_has_one_request_id_and_each_response_echoes_its_requests_id(stub):
    requests = [
        infer_request("classifier", FEATURES, request_id="a"),
        infer_request("lookup", OUT_OF_TABLE, request_id="b"),  # INTERNAL, answered in-band
        infer_request("classifier", FEATURES, request_id="c"),
    ]
    call = stub.ModelStreamInfer(iter(requests), metadata=(("x-request-id", "stream-1"),))
    answers = list(call)
    assert [a.infer_response.id for a in answers] == ["a", "", "c"]
    assert answers[1].error_message == "internal error (request stream-1)"
    assert trailer(call) == "stream-1"


def test_a_stream_without_an_id_gets_a_generated_one(stub):
    call = stub.ModelStreamInfer(iter([infer_request("classifier", FEATURES)]))
    assert len(list(call)) == 1
    assert GENERATED.fullmatch(trailer(call))


def test_each_stream_message_without_an_id_gets_its_own(stub):
    """The stream's x-request-id names the stream; each prediction needs an id of its own."""
    requests = [infer_request("classifier", FEATURES) for _ in range(3)]
    call = stub.ModelStreamInfer(iter(requests), metadata=(("x-request-id", "stream-2"),))
    ids = [a.infer_response.id for a in call]
    assert all(GENERATED.fullmatch(i) for i in ids)
    assert len(set(ids)) == 3
    assert trailer(call) == "stream-2"


def test_other_rpcs_are_not_given_a_trailer(stub):
    _, call = stub.ServerLive.with_call(pb.ServerLiveRequest())
    assert [k for k, _ in call.trailing_metadata() or ()] == []


@pytest.mark.tritonclient
def test_tritonclient_sees_its_request_id_echoed_and_can_send_x_request_id(repo):
    """tritonclient's infer() keeps only the response message, so the trailer cannot be read
    through it (the tests above read it with grpc); what it does expose is checked here."""
    python = triton_venv(os.environ) / "bin" / "python"
    with running_gateway(repo) as gateway:
        observed = run_script(python, gateway.address, ("request_id",))["request_id"]
    assert ok(observed["with_id"]) == {"id": "req-42", "model_version": "2"}
    assert ok(observed["with_id_and_header"]) == {"id": "req-43", "model_version": "2"}
    without_id = ok(observed["without_id"])
    assert GENERATED.fullmatch(without_id.pop("id"))
    assert without_id == {"model_version": "2"}
    assert error(observed["unknown_model"])["status"] == "StatusCode.NOT_FOUND"


def test_a_call_refused_by_authentication_carries_its_request_id_too(repo, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("reader infer s3cret-token-of-the-reader\n")
    tokens.chmod(0o600)
    gateway = make_gateway(repo, auth_tokens_file=tokens)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(infer_request("classifier", FEATURES),
                                metadata=(("x-request-id", "no-token-1"),))  # fmt: skip
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert trailer(refused.value) == "no-token-1"
    finally:
        gateway.stop(grace_seconds=1)
