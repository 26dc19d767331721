"""Every RPC of the inference service, health and reflection, on a real server."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import model_config_pb2 as mc
from tests.support.wire import infer_request, output_arrays

FEATURES = np.ones((2, 4), np.float32)


def test_server_is_live(stub):
    assert stub.ServerLive(pb.ServerLiveRequest()).live


def test_server_is_ready_once_models_are_loaded(stub):
    assert stub.ServerReady(pb.ServerReadyRequest()).ready


def test_model_ready_for_default_and_pinned_versions(stub):
    assert stub.ModelReady(pb.ModelReadyRequest(name="classifier")).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="classifier", version="1")).ready


def test_model_ready_is_false_for_unknown_model_and_version(stub):
    assert not stub.ModelReady(pb.ModelReadyRequest(name="absent")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="classifier", version="7")).ready


def test_server_metadata_names_onnxgate_and_only_real_extensions(stub):
    metadata = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert metadata.name == "onnxgate"
    assert metadata.version
    assert "statistics" not in metadata.extensions
    assert "model_configuration" in metadata.extensions


def test_model_metadata_of_default_version(stub):
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="classifier"))
    assert metadata.name == "classifier"
    assert list(metadata.versions) == ["2"]
    assert metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("input", "FP32", [-1, 4])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("probabilities", "FP32", [-1, 2]),
        ("logits", "FP32", [-1, 2]),
    ]


def test_model_metadata_of_pinned_version(stub):
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="classifier", version="1"))
    assert list(metadata.versions) == ["1"]


def test_model_metadata_of_unknown_model_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="absent"))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


def test_model_config_drops_the_batch_dim_for_batchable_models(stub):
    config = stub.ModelConfig(pb.ModelConfigRequest(name="classifier")).config
    assert config.name == "classifier"
    assert config.platform == "onnxruntime_onnx"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 1024
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("input", mc.TYPE_FP32, [4])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("probabilities", mc.TYPE_FP32, [2]),
        ("logits", mc.TYPE_FP32, [2]),
    ]


def test_model_config_keeps_full_dims_for_models_without_batch_dim(stub):
    config = stub.ModelConfig(pb.ModelConfigRequest(name="two_inputs")).config
    assert config.max_batch_size == 0
    assert [list(i.dims) for i in config.input] == [[-1, 2], [-1, 2], [3]]


def test_model_config_of_unknown_model_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelConfig(pb.ModelConfigRequest(name="absent"))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


def test_repository_index_lists_every_version_with_state(stub):
    index = stub.RepositoryIndex(pb.RepositoryIndexRequest())
    entries = {(m.name, m.version): m.state for m in index.models}
    assert entries[("classifier", "1")] == "READY"
    assert entries[("classifier", "2")] == "READY"
    assert entries[("identity_bytes", "1")] == "READY"


def test_repository_model_load_is_unimplemented_with_a_reason(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="classifier"))
    assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "--models" in str(err.value.details())


def test_model_infer_echoes_id_and_names_the_serving_version(stub):
    response = stub.ModelInfer(infer_request("classifier", {"input": FEATURES}, request_id="r-1"))
    assert response.id == "r-1"
    assert response.model_name == "classifier"
    assert response.model_version == "2"
    assert response.parameters["routed_by"].string_param == "weight"


def test_pinned_version_serves_and_says_so(stub):
    response = stub.ModelInfer(infer_request("classifier", {"input": FEATURES}, version="1"))
    assert response.model_version == "1"
    assert response.parameters["routed_by"].string_param == "pin"


def test_versions_answer_differently(stub):
    v1 = stub.ModelInfer(infer_request("classifier", {"input": FEATURES}, version="1"))
    v2 = stub.ModelInfer(infer_request("classifier", {"input": FEATURES}, version="2"))
    assert not np.allclose(output_arrays(v1)["logits"], output_arrays(v2)["logits"])


def test_output_filter_returns_only_requested_outputs(stub):
    response = stub.ModelInfer(infer_request("classifier", {"input": FEATURES}, outputs=["logits"]))
    assert [o.name for o in response.outputs] == ["logits"]
    assert len(response.raw_output_contents) == 1


def test_request_parameters_of_every_kind_are_accepted(stub):
    request = infer_request("classifier", {"input": FEATURES})
    request.parameters["priority"].uint64_param = 1
    request.parameters["timeout"].int64_param = 1000
    request.parameters["flag"].bool_param = True
    request.parameters["ratio"].double_param = 0.5
    request.parameters["note"].string_param = "x"
    assert stub.ModelInfer(request).model_version == "2"


def test_stream_infer_answers_each_request_and_reports_errors_in_band(stub):
    good = infer_request("classifier", {"input": FEATURES}, request_id="a")
    bad = infer_request("classifier", {"input": np.ones((1, 5), np.float32)}, request_id="b")
    responses = list(stub.ModelStreamInfer(iter([good, bad, good])))
    assert [r.infer_response.id for r in responses] == ["a", "", "a"]
    assert "unexpected shape for input 'input'" in responses[1].error_message
    assert responses[2].infer_response.model_version == "2"


def test_health_reports_serving_overall_and_per_service(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ["", "inference.GRPCInferenceService"]:
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def test_health_of_unknown_service_is_not_found(channel):
    with pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="nope"))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    response = next(stub.ServerReflectionInfo(iter([request])))
    names = {s.name for s in response.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
