"""Shadow versions get mirrored copies, are compared with the primary, and never hurt it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from registry_client.client import RegistryClient
from registry_client.schema import Shadow, Split
from tests import onnx_models
from tests.conftest import eventually, make_gateway
from tests.wire import infer_request

FEATURES = {"input": np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)}


@pytest.fixture
def registry(redis_server, tmp_path: Path) -> Iterator[RegistryClient]:
    """credit 1; 2 = the same network (other bytes); 3 = other weights; 4 = other inputs."""
    client = RegistryClient.from_url(redis_server.url)
    client.create_model("credit", actor="ops")
    same = onnx_models.classifier(seed=1)
    same.doc_string = "retrained, identical weights"
    models = {"1": onnx_models.classifier(seed=1), "2": same,
              "3": onnx_models.classifier(seed=3), "4": onnx_models.two_inputs()}  # fmt: skip
    for version, model in models.items():
        client.register_version(
            "credit", version, onnx_models.save(model, tmp_path, "credit", version), actor="ops"
        )
    yield client
    client.close()


def _gateway(redis_server, **settings: object) -> Gateway:
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
        shadow_ok = {"model": "credit", "version": "2", "role": "shadow", "code": "OK"}
        assert _value(gateway, "onnxgate_requests_total", **shadow_ok) == 20
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
    registry.set_route("credit", [Split("1", 100)], [Shadow("4", 100)], actor="ops")
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
        dropped = {"model": "credit", "version": "2"}
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
