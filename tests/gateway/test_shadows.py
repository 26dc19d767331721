"""Shadow versions get mirrored copies, are compared with the primary, and never hurt it."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Shadow, Split
from tests.support import onnx_models
from tests.support.gateways import eventually, make_gateway
from tests.support.wire import infer_request

FEATURES = {"input": np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)}


@pytest.fixture
def registry(redis_server, tmp_path: Path) -> Iterator[RegistryClient]:
    """credit 1; 2 = the same network (other bytes); 3 = other weights; 4 = other inputs;
    5 = 1's answers, tens of times slower; 6 and 7: class 0 when x0 > x1, and when x0 > x1 + 1."""
    client = RegistryClient.from_url(redis_server.url)
    client.create_model("credit", actor="ops")
    same = onnx_models.classifier(seed=1)
    same.doc_string = "retrained, identical weights"
    first_two = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], np.float32)
    models = {"1": onnx_models.classifier(seed=1), "2": same,
              "3": onnx_models.classifier(seed=3), "4": onnx_models.two_inputs(),
              "5": onnx_models.slow_classifier(seed=1),
              "6": onnx_models.linear_classifier(first_two, np.zeros(2)),
              "7": onnx_models.linear_classifier(first_two, np.array([0, 1]))}  # fmt: skip
    for version, model in models.items():
        client.register_version(
            "credit", version, onnx_models.save(model, tmp_path, "credit", version), actor="ops"
        )
    yield client
    client.close()


def _gateway(redis_server, **settings: object) -> Gateway:
    """A gateway that runs every shadow copy while its queue has room, however busy the
    (shared) test machine is; test_busy_gateway_sheds_shadow_copies covers the busy case."""
    settings = {"shadow_max_cpu_busy": 1.0, **settings}
    return make_gateway(None, redis_url=redis_server.url, rules_poll_seconds=0.2, **settings)


def _value(gateway: Gateway, name: str, **labels: str) -> float:
    return gateway.registry.get_sample_value(name, labels) or 0.0


def _send(gateway: Gateway, count: int) -> list[str]:
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        return [stub.ModelInfer(infer_request("credit", FEATURES)).model_version
                for _ in range(count)]  # fmt: skip


def test_identical_shadow_agrees_fully_and_is_never_returned(redis_server, registry):
    registry.set_route("credit", [Split("1", 100)], [Shadow("2", 100)], actor="ops")
    gateway = _gateway(redis_server)
    try:
        assert set(_send(gateway, 20)) == {"1"}
        pair = {"model": "credit", "primary": "1", "shadow": "2", "output": "probabilities"}
        eventually(lambda: _value(gateway, "onnxgate_shadow_rows_total", **pair) == 160)
        assert _value(gateway, "onnxgate_shadow_agreeing_rows_total", **pair) == 160
        assert _value(gateway, "onnxgate_shadow_max_abs_diff", **pair) == 0
        assert _value(gateway, "onnxgate_shadow_agreement", **pair) == 1.0
        shadow = {"model": "credit", "version": "2", "role": "shadow"}
        assert _value(gateway, "onnxgate_requests_total", **shadow, code="OK") == 20
        assert _value(gateway, "onnxgate_inference_duration_seconds_count", **shadow) == 20
        primary = {"model": "credit", "version": "1", "role": "primary"}
        assert _value(gateway, "onnxgate_inference_duration_seconds_count", **primary) == 20
    finally:
        gateway.stop(grace_seconds=1)


def test_different_shadow_shows_its_disagreement(redis_server, registry):
    registry.set_route("credit", [Split("1", 100)], [Shadow("3", 100)], actor="ops")
    gateway = _gateway(redis_server)
    try:
        _send(gateway, 25)
        pair = {"model": "credit", "primary": "1", "shadow": "3", "output": "logits"}
        eventually(lambda: _value(gateway, "onnxgate_shadow_rows_total", **pair) == 200)
        agreeing = _value(gateway, "onnxgate_shadow_agreeing_rows_total", **pair)
        assert agreeing < 200
        assert _value(gateway, "onnxgate_shadow_max_abs_diff", **pair) > 0
    finally:
        gateway.stop(grace_seconds=1)


def test_failing_shadow_never_reaches_the_caller(redis_server, registry):
    registry.set_route("credit", [Split("1", 100)], [Shadow("4", 100)], actor="ops",
                       allow_schema_change=True, reason="a shadow of other inputs")  # fmt: skip
    gateway = _gateway(redis_server)
    try:
        assert set(_send(gateway, 10)) == {"1"}  # the shadow cannot even take these inputs
        failed = {"model": "credit", "version": "4", "role": "shadow", "code": "INTERNAL"}
        eventually(lambda: _value(gateway, "onnxgate_requests_total", **failed) == 10)
        primary_ok = {"model": "credit", "version": "1", "role": "primary", "code": "OK"}
        assert _value(gateway, "onnxgate_requests_total", **primary_ok) == 10
    finally:
        gateway.stop(grace_seconds=1)


def test_full_shadow_queue_drops_and_counts(redis_server, registry):
    registry.set_route("credit", [Split("1", 100)], [Shadow("2", 100)], actor="ops")
    gateway = _gateway(redis_server, shadow_queue_size=1, shadow_workers=0)  # nothing drains
    try:
        assert set(_send(gateway, 5)) == {"1"}
        dropped = {"model": "credit", "version": "2", "reason": "queue_full"}
        assert _value(gateway, "onnxgate_shadow_dropped_total", **dropped) == 4
    finally:
        gateway.stop(grace_seconds=1)


def test_shadow_percent_mirrors_that_share(redis_server, registry):
    registry.set_route("credit", [Split("1", 100)], [Shadow("2", 25)], actor="ops")
    gateway = _gateway(redis_server)
    try:
        _send(gateway, 400)
    finally:
        gateway.stop(grace_seconds=1)  # the shadow workers finish what was queued
    ok = {"model": "credit", "version": "2", "role": "shadow", "code": "OK"}
    assert 60 <= _value(gateway, "onnxgate_requests_total", **ok) <= 140


# x0 - x1 per row: 6 answers class 0 when it is above 0, 7 only when it is above 1, so the rows
# at 0.5, 0.2 and 0.9 disagree and the other five agree.
MARGINS = np.array([0.5, 0.2, 0.9, 2.0, 3.0, -1.0, -0.5, -2.0], np.float32)
KNOWN_SHARE = {"input": np.stack([MARGINS, np.zeros(8), np.ones(8), np.ones(8)], 1)
               .astype(np.float32)}  # fmt: skip


def test_shadow_built_to_disagree_on_three_rows_in_eight_scores_five_eighths(
    redis_server, registry
):
    registry.set_route("credit", [Split("6", 100)], [Shadow("7", 100)], actor="ops")
    gateway = _gateway(redis_server)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(16):
                stub.ModelInfer(infer_request("credit", KNOWN_SHARE))
        pair = {"model": "credit", "primary": "6", "shadow": "7", "output": "probabilities"}
        eventually(lambda: _value(gateway, "onnxgate_shadow_rows_total", **pair) == 128)
        assert _value(gateway, "onnxgate_shadow_agreeing_rows_total", **pair) == 80
        assert _value(gateway, "onnxgate_shadow_agreement", **pair) == 0.625
        logits = {**pair, "output": "logits"}
        assert _value(gateway, "onnxgate_shadow_agreement", **logits) == 0.625
        assert _value(gateway, "onnxgate_shadow_max_abs_diff", **logits) == 1.0  # the bias
    finally:
        gateway.stop(grace_seconds=1)


def _responses(gateway: Gateway, count: int) -> list[bytes]:
    """`count` different requests from 4 threads; the serialized responses, in order."""
    rng = np.random.default_rng(7)
    inputs = [rng.normal(size=(4, 4)).astype(np.float32) for _ in range(count)]
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def call(i: int) -> bytes:
            request = infer_request("credit", {"input": inputs[i]}, request_id=f"r{i}")
            return stub.ModelInfer(request, timeout=10).SerializeToString()

        with ThreadPoolExecutor(4) as pool:  # a primary failure raises here
            return list(pool.map(call, range(count)))


@pytest.mark.parametrize(
    ("shadow", "settings", "outcome"),
    [
        ("4", {}, "INTERNAL"),  # always fails: it cannot take these inputs
        ("5", {}, "OK"),  # the same answers, tens of times slower
        ("2", {"shadow_queue_size": 1, "shadow_workers": 0}, "dropped"),  # the queue is full
    ],
    ids=["failing", "slow", "full-queue"],
)
def test_primary_answers_are_byte_identical_whatever_the_shadow_does(
    redis_server, registry, shadow, settings, outcome
):
    registry.set_route("credit", [Split("1", 100)], actor="ops")
    gateway = _gateway(redis_server, **settings)
    try:
        without = _responses(gateway, 100)
        # The failing shadow takes other inputs: routed past the schema gate on purpose.
        registry.set_route("credit", [Split("1", 100)], [Shadow(shadow, 100)], actor="ops",
                           allow_schema_change=True, reason="shadows that misbehave")  # fmt: skip
        eventually(lambda: bool(gateway.routes.current().routes["credit"].shadows))
        with_shadow = _responses(gateway, 100)
        assert with_shadow == without
        primary = {"model": "credit", "version": "1", "role": "primary", "code": "OK"}
        assert _value(gateway, "onnxgate_requests_total", **primary) == 200
    finally:
        gateway.stop(grace_seconds=5)  # lets the shadow workers finish what was queued
    if outcome == "dropped":
        dropped = {"model": "credit", "version": shadow, "reason": "queue_full"}
        assert _value(gateway, "onnxgate_shadow_dropped_total", **dropped) == 99
    else:
        ran = {"model": "credit", "version": shadow, "role": "shadow", "code": outcome}
        assert _value(gateway, "onnxgate_requests_total", **ran) == 100


def test_busy_gateway_sheds_shadow_copies_and_counts_them(redis_server, registry):
    registry.set_route("credit", [Split("1", 100)], [Shadow("2", 100)], actor="ops")
    gateway = _gateway(redis_server, shadow_max_cpu_busy=0.0)  # never has spare CPU
    try:
        # Spare until its first CPU sample is taken: from then on, never.
        eventually(lambda: not gateway.shadows._headroom.spare)
        assert set(_send(gateway, 10)) == {"1"}
        busy = {"model": "credit", "version": "2", "reason": "busy"}
        assert _value(gateway, "onnxgate_shadow_dropped_total", **busy) == 10
    finally:
        gateway.stop(grace_seconds=1)
    ran = {"model": "credit", "version": "2", "role": "shadow", "code": "OK"}
    assert _value(gateway, "onnxgate_requests_total", **ran) == 0
