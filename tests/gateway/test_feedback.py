"""The Feedback service through real gateways over a real Redis: labels stored for a token
with the `feedback` scope and refused to an inference token, malformed labels named with
nothing stored, models that cannot take labels, Redis lost before and during a write, the bound
on calls at once (ModelInfer served meanwhile), the Redis user's grant, no registry at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway._proto import feedback_pb2 as fb
from gateway._proto import feedback_pb2_grpc as fb_grpc
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from registry_client.client import RegistryClient
from registry_client.schema import Keys
from tests.support.gateways import eventually, make_gateway, register_credit
from tests.support.redis_server import GATEWAY_ACL, RedisServer
from tests.support.wire import infer_request

TOKENS = {"feedback": "feedback-token-0123456789abcdef", "infer": "infer-token-0123456789abcdef"}
STREAM = Keys("onnxgate").labels("credit")
THREE = [fb.Label(id="a", value=1), fb.Label(id="b", value=0, weight=2.5),
         fb.Label(id="c:0", value=1, weight=0)]  # fmt: skip


def bearer(scope: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[scope]}"),)


def put(channel: grpc.Channel, labels: list[fb.Label], model: str = "credit",
        scope: str = "feedback") -> fb.PutLabelsResponse:  # fmt: skip
    request = fb.PutLabelsRequest(model_name=model, labels=labels)
    return fb_grpc.FeedbackStub(channel).PutLabels(request, metadata=bearer(scope), timeout=30)


def refusal(channel: grpc.Channel, labels: list[fb.Label], **kwargs: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        put(channel, labels, **kwargs)
    return refused.value


def stored(admin: redis.Redis) -> list[tuple[str, float, float]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = admin.xrange(STREAM)  # type: ignore[assignment]  # a sync client's reply
    return [(f[b"id"].decode(), float(f[b"v"]), float(f[b"w"])) for _, f in entries]


def feedback_gateway(url: str, tmp_path: Path, **overrides: object) -> Gateway:
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(f"{s}-caller {s} {t}\n" for s, t in TOKENS.items()))
    tokens.chmod(0o600)
    return make_gateway(None, redis_url=url, auth_tokens_file=tokens, rules_poll_seconds=0.2,
                        **overrides)  # fmt: skip


@pytest.fixture
def registry(redis_server: RedisServer, tmp_path: Path) -> Iterator[RegistryClient]:
    """credit (versions 1 and 2, scored as binary) and bare (no quality config)."""
    client = RegistryClient.from_url(redis_server.url)
    register_credit(client, tmp_path)
    client.create_model("credit", actor="ops",
                        quality=client.resolve_quality("credit", task="binary"))  # fmt: skip
    client.create_model("bare", actor="ops")
    yield client
    client.close()


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    try:
        client.execute_command("CLIENT", "UNPAUSE")  # a paused Redis would hold the gateway's stop
    except redis.ConnectionError:
        pass  # the test stopped it
    client.close()


@pytest.fixture
def served(redis_server, registry, tmp_path) -> Iterator[tuple[Gateway, grpc.Channel]]:
    gateway = feedback_gateway(redis_server.url, tmp_path, feedback_max_calls=1)
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield gateway, channel
    gateway.stop(grace_seconds=1)


def test_a_feedback_token_stores_labels_weight_zero_meaning_one(served, admin):
    _, channel = served
    assert put(channel, THREE).accepted == 3
    assert stored(admin) == [("a", 1.0, 1.0), ("b", 0.0, 2.5), ("c:0", 1.0, 1.0)]


def test_scopes_keep_labels_and_inference_apart(served, admin):
    _, channel = served
    refused = refusal(channel, THREE, scope="infer")
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details() == (
        "token 'infer-caller' lacks the 'feedback' scope for"
        " /onnxgate.feedback.v1.Feedback/PutLabels"
    )
    with pytest.raises(grpc.RpcError) as infer:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            infer_request("credit", {"input": np.ones((1, 4), np.float32)}),
            metadata=bearer("feedback"), timeout=10,
        )  # fmt: skip
    assert infer.value.code() is grpc.StatusCode.PERMISSION_DENIED
    unauthenticated = fb_grpc.FeedbackStub(channel).PutLabels.with_call
    with pytest.raises(grpc.RpcError) as anonymous:
        unauthenticated(fb.PutLabelsRequest(model_name="credit", labels=THREE), timeout=10)
    assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert stored(admin) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (fb.Label(id="", value=1), "labels[1].id: expected 1 to 128 printable characters, got ''"),
        (fb.Label(id="x" * 129, value=1), "labels[1].id: expected 1 to 128 printable"),
        (fb.Label(id="a\nb", value=1), "labels[1].id: expected 1 to 128 printable"),
        (fb.Label(id="b", value=float("nan")), "labels[1].value: expected a finite number,"
                                               " got nan"),
        (fb.Label(id="b", value=1, weight=-1), "labels[1].weight: expected a finite number > 0"
                                               " (0 or unset: 1), got -1.0"),
        (fb.Label(id="b", value=1, weight=float("inf")), "labels[1].weight: expected a finite"),
    ],
)  # fmt: skip
def test_a_malformed_label_is_named_and_nothing_is_stored(served, admin, bad, message):
    refused = refusal(served[1], [THREE[0], bad, THREE[2]])
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(refused.details())
    assert stored(admin) == []


def test_more_labels_than_one_call_takes_is_refused_naming_the_bound(served, admin):
    labels = [fb.Label(id=f"id-{i}", value=1) for i in range(10_001)]
    refused = refusal(served[1], labels)
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == (
        "labels: 10001 in one call; expected at most 10,000: send them in several calls"
    )
    assert put(served[1], labels[:10_000]).accepted == 10_000


@pytest.mark.parametrize(
    ("model", "code", "message"),
    [
        ("nobody", grpc.StatusCode.NOT_FOUND, "model 'nobody' is not registered: register it"
         " and say how it is scored (gatectl model create nobody --task"),
        ("bare", grpc.StatusCode.FAILED_PRECONDITION, "model 'bare' has no quality config, so"
         " its labels would never be joined"),
        ("no/such", grpc.StatusCode.INVALID_ARGUMENT, "model_name: expected 1 to 128"),
    ],
)  # fmt: skip
def test_a_model_that_cannot_take_labels_is_refused_saying_how_to_fix_it(served, model, code,
                                                                         message):  # fmt: skip
    refused = refusal(served[1], THREE, model=model)
    assert refused.code() is code
    assert message in str(refused.details())


def test_redis_down_before_the_write_is_unavailable_with_nothing_stored(served, redis_server):
    redis_server.stop()
    refused = refusal(served[1], THREE)
    assert refused.code() is grpc.StatusCode.UNAVAILABLE
    assert refused.details() == (
        "the registry's Redis is unreachable; none of the 3 labels was stored: retry with backoff"
    )


def _waiting_appends(admin: redis.Redis) -> int:
    """Clients whose XADD Redis holds (CLIENT PAUSE WRITE)."""
    return sum(1 for c in admin.client_list() if c["cmd"] == "xadd" and "b" in c["flags"])


def test_redis_lost_during_the_write_says_any_part_may_be_stored(served, redis_server, admin):
    admin.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")  # reads pass, appends wait
    call = fb_grpc.FeedbackStub(served[1]).PutLabels.future(
        fb.PutLabelsRequest(model_name="credit", labels=THREE), metadata=bearer("feedback"),
        timeout=30,
    )  # fmt: skip
    eventually(lambda: _waiting_appends(admin) == 1)
    redis_server.kill()
    with pytest.raises(grpc.RpcError) as refused:
        call.result()
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == (
        "the registry's Redis became unreachable while the 3 labels were stored: none, some"
        " or all of them are; send the same call again: a label stored twice replaces itself"
        " (the join counts it once)"
    )


def test_calls_beyond_the_bound_are_refused_at_once_and_inference_goes_on(served, admin):
    _, channel = served  # --feedback-max-calls 1
    admin.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
    first = fb_grpc.FeedbackStub(channel).PutLabels.future(
        fb.PutLabelsRequest(model_name="credit", labels=THREE[:1]), metadata=bearer("feedback"),
        timeout=30,
    )  # fmt: skip
    eventually(lambda: _waiting_appends(admin) == 1)
    refused = refusal(channel, THREE[1:])
    assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "(--feedback-max-calls)" in str(refused.details())
    infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    request = infer_request("credit", {"input": np.ones((1, 4), np.float32)})
    for _ in range(20):  # every request thread is free: none waits on Redis
        assert infer(request, metadata=bearer("infer"), timeout=5).model_name == "credit"
    admin.execute_command("CLIENT", "UNPAUSE")
    assert first.result(timeout=30).accepted == 1
    assert put(channel, THREE[1:]).accepted == 2  # the slot is free again
    assert [rid for rid, _, _ in stored(admin)] == ["a", "b", "c:0"]


def test_the_gateway_redis_user_needs_the_label_grant(redis_server, registry, admin, tmp_path):
    admin.execute_command("ACL", "SETUSER", "gateway", *GATEWAY_ACL.split())
    url = redis_server.url.replace("redis://", "redis://gateway:gateway-secret@")
    gateway = feedback_gateway(url, tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            refused = refusal(channel, THREE)
            assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "Redis user may not append labels" in str(refused.details())
            assert stored(admin) == []
            # The grant docs/security.md gives a gateway that takes labels.
            admin.execute_command("ACL", "SETUSER", "gateway", "+xadd", "%W~{onnxgate:*}:labels")
            assert put(channel, THREE).accepted == 3
    finally:
        gateway.stop(grace_seconds=1)


def test_reflection_lists_the_feedback_service(served):
    stub = reflection_pb2_grpc.ServerReflectionStub(served[1])
    listing = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = stub.ServerReflectionInfo(iter([listing]), metadata=bearer("infer"), timeout=10)
    names = {s.name for s in answer.list_services_response.service}
    assert "onnxgate.feedback.v1.Feedback" in names


def test_a_gateway_without_a_registry_says_labels_need_one(channel):
    request = fb.PutLabelsRequest(model_name="classifier", labels=THREE)
    with pytest.raises(grpc.RpcError) as refused:
        fb_grpc.FeedbackStub(channel).PutLabels(request, timeout=10)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert str(refused.value.details()).startswith("labels need a registry")
