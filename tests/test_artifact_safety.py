"""Model artifacts that must not be served: what they reference stays unread."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from tests import onnx_models
from tests.conftest import make_gateway
from tests.wire import infer_request


def _with_external_weights(location: str) -> onnx.ModelProto:
    """The test classifier with its weights moved to an external data file at `location`."""
    model = onnx_models.classifier()
    weights = next(t for t in model.graph.initializer if t.raw_data)
    length = len(weights.raw_data)
    weights.ClearField("raw_data")
    weights.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    return model


@pytest.mark.parametrize("where", ["beside", "parent", "absolute"])
def test_a_model_reading_external_data_files_fails_and_the_rest_serves(tmp_path, where):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full(64, 7, np.float32).tobytes())
    location = {"beside": "weights.bin", "parent": "../../secret.bin", "absolute": str(secret)}
    repo = tmp_path / "repo"
    onnx_models.save(onnx_models.classifier(), repo, "good", "1")
    path = onnx_models.save(_with_external_weights(location[where]), repo, "leaky", "1")
    (path.parent / "weights.bin").write_bytes(secret.read_bytes())
    gateway = make_gateway(repo)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            index = stub.RepositoryIndex(pb.RepositoryIndexRequest())
            leaky = next(m for m in index.models if m.name == "leaky")
            assert leaky.state == "UNAVAILABLE"
            assert "only self-contained .onnx files are served" in leaky.reason
            assert str(tmp_path) not in leaky.reason and "onnxruntime_src" not in leaky.reason
            ok = stub.ModelInfer(infer_request("good", {"input": np.ones((1, 4), np.float32)}))
            assert ok.model_version == "1"
    finally:
        gateway.stop(grace_seconds=1)


def test_onnxruntime_reasons_carry_no_source_paths(tmp_path: Path):
    model = onnx_models.classifier()
    weights = next(t for t in model.graph.initializer if t.raw_data)
    weights.raw_data = weights.raw_data[:4]  # shorter than its shape: onnxruntime's ENFORCE
    repo = tmp_path / "repo"
    onnx_models.save(model, repo, "broken", "1")
    gateway = make_gateway(repo)
    try:
        (status,) = [s for s in gateway.versions.statuses() if s.model == "broken"]
        assert status.reason.startswith("onnxruntime rejected the model: ")
        assert "raw_data size (4 bytes) does not match" in status.reason
        assert "/onnxruntime_src/" not in status.reason
        assert str(tmp_path) not in status.reason
    finally:
        gateway.stop(grace_seconds=1)


def test_a_model_above_the_size_cap_fails_unread_and_the_rest_serves(tmp_path: Path):
    repo = tmp_path / "repo"
    small = onnx_models.save(onnx_models.classifier(), repo, "small", "1")
    big = onnx_models.save(onnx_models.classifier(features=64), repo, "big", "1")
    cap = small.stat().st_size
    assert big.stat().st_size > cap
    gateway = make_gateway(repo, max_model_bytes=cap)
    try:
        statuses = {s.model: s for s in gateway.versions.statuses()}
        assert statuses["big"].state.name == "FAILED"
        assert statuses["big"].reason == (
            f"artifact is larger than --max-model-bytes {cap}; not loaded"
        )
        assert statuses["small"].state.name == "READY"
    finally:
        gateway.stop(grace_seconds=1)
