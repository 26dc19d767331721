"""Model artifacts that must not be served: what they reference stays unread."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import redis

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from registry_client.cli.main import main as gatectl
from registry_client.client import RegistryClient
from registry_client.errors import Rejected
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.gateways import eventually, make_gateway
from tests.support.wire import infer_request


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


def _uploaded_credit(redis_server, tmp_path: Path) -> tuple[RegistryClient, str]:
    """credit 1 uploaded into the registry (its file deleted) and routed; returns its sha256."""
    registry = RegistryClient.from_url(redis_server.url)
    registry.create_model("credit", actor="ops")
    path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path / "upload", "credit", "1")
    sha256 = registry.register_version("credit", "1", path, actor="ops", upload=True)["sha256"]
    path.unlink()
    registry.set_route("credit", [Split("1", 100)], actor="ops")
    return registry, sha256


def _outputs(stub: pb_grpc.GRPCInferenceServiceStub) -> bytes:
    request = infer_request("credit", {"input": np.full((1, 4), 0.5, np.float32)})
    return bytes(stub.ModelInfer(request, timeout=10).raw_output_contents[0])


def test_a_symlink_planted_in_the_artifact_cache_is_replaced_not_followed(redis_server, tmp_path):
    registry, sha256 = _uploaded_credit(redis_server, tmp_path)
    # Someone points the cache entry at another model (outside the cache) before the gateway
    # starts: it must serve the registry's bytes, and leave the target alone.
    planted = onnx_models.save(onnx_models.classifier(seed=9), tmp_path / "elsewhere", "x", "1")
    planted_bytes = planted.read_bytes()
    cache = tmp_path / "data" / "artifacts"
    cache.mkdir(parents=True)
    (cache / f"{sha256}.onnx").symlink_to(planted)
    reference = make_gateway(
        onnx_models_repo(tmp_path / "reference", onnx_models.classifier(seed=1)), metrics_port=-1
    )
    gateway = make_gateway(None, redis_url=redis_server.url, data_dir=tmp_path / "data")
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel,
            grpc.insecure_channel(f"127.0.0.1:{reference.grpc_port}") as expected_channel,
        ):
            served = _outputs(pb_grpc.GRPCInferenceServiceStub(channel))
            assert served == _outputs(pb_grpc.GRPCInferenceServiceStub(expected_channel))
        entry = cache / f"{sha256}.onnx"
        assert not entry.is_symlink() and entry.read_bytes() != planted_bytes
        assert planted.read_bytes() == planted_bytes
    finally:
        gateway.stop(grace_seconds=1)
        reference.stop(grace_seconds=1)
        registry.close()


def onnx_models_repo(root: Path, model: onnx.ModelProto) -> Path:
    onnx_models.save(model, root, "credit", "1")
    return root


@pytest.mark.parametrize("stored", ["../../escaped", "/tmp/escaped", "a" * 63, "A" * 64])
def test_a_tampered_sha256_field_never_becomes_a_path(redis_server, tmp_path, stored):
    registry, _ = _uploaded_credit(redis_server, tmp_path)
    gateway = make_gateway(
        None, redis_url=redis_server.url, data_dir=tmp_path / "data", rules_poll_seconds=0.05,
        heartbeat_seconds=0.1,
    )  # fmt: skip
    try:
        path = onnx_models.save(onnx_models.classifier(seed=2), tmp_path / "v2", "credit", "2")
        registry.register_version("credit", "2", path, actor="ops", upload=True)
        raw = redis.Redis.from_url(redis_server.url)
        raw.hset(registry.keys.version("credit", "2"), "sha256", stored)
        raw.close()
        registry.set_route("credit", [Split("2", 100)], actor="ops")

        def reported() -> str:
            heartbeat = registry.gateways().get(gateway.replica, {})
            return str(json.loads(heartbeat.get("errors", "{}")).get("credit", ""))

        eventually(lambda: "expected 64 lowercase hex digits" in reported())
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            request = infer_request("credit", {"input": np.ones((1, 4), np.float32)})
            assert stub.ModelInfer(request, timeout=10).model_version == "1"  # split untouched
        assert sorted(p.name for p in (tmp_path / "data" / "artifacts").iterdir()) == [
            f"{registry.show_version('credit', '1')['sha256']}.onnx"
        ]
        assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped.onnx").exists()
    finally:
        gateway.stop(grace_seconds=1)
        registry.close()


def test_registration_and_fetch_refuse_artifacts_over_the_cap(redis_server, tmp_path):
    registry = RegistryClient.from_url(redis_server.url)
    registry.create_model("credit", actor="ops")
    path = onnx_models.save(onnx_models.classifier(), tmp_path, "credit", "1")
    size = path.stat().st_size
    with pytest.raises(Rejected, match=f"larger than {size - 1} bytes; gateways would refuse"):
        registry.register_version("credit", "1", path, actor="ops", upload=True, max_bytes=size - 1)
    assert registry.list_versions("credit") == []  # nothing registered, nothing uploaded
    sha256 = registry.register_version("credit", "1", path, actor="ops", upload=True)["sha256"]
    with pytest.raises(Rejected, match="is larger than 100 bytes"):
        registry.fetch_blob(sha256, max_bytes=100)
    assert len(registry.fetch_blob(sha256, max_bytes=size)) == size
    registry.close()


def test_gatectl_register_refuses_a_file_over_max_artifact_bytes(redis_server, tmp_path):
    path = onnx_models.save(onnx_models.classifier(), tmp_path, "credit", "1")
    argv = ["--redis-url", redis_server.url, "register", "credit", "1", str(path),
            "--create-model", "--upload", "--max-artifact-bytes"]  # fmt: skip
    err = io.StringIO()
    assert gatectl([*argv, "100"], {}, io.StringIO(), err) == 1
    assert "larger than 100 bytes" in err.getvalue()
    usage = io.StringIO()
    with contextlib.redirect_stderr(usage), pytest.raises(SystemExit) as exit_code:
        gatectl([*argv, "0"], {}, io.StringIO(), io.StringIO())  # argparse's usage error
    assert exit_code.value.code == 2
    assert "expected a number of bytes >= 1, got '0'" in usage.getvalue()
