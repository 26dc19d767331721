"""The unmodified tritonclient.grpc, in its own virtualenv, against a gateway subprocess.

tritonclient's generated `inference` protos clash with ours in one process and it pins
protobuf<5 and numpy<2, so tests/support/triton_client_script.py runs in the virtualenv named by
ONNXGATE_TRITON_VENV (default <repo>/.venv-triton) and prints what it observed as JSON; the
tests here judge that JSON against onnxruntime run in-process on the same model files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

from tests.support import onnx_models
from tests.support.triton import (
    TRITON_VENV_VARIABLE,
    Json,
    error,
    ok,
    run_script,
    running_gateway,
    triton_venv,
)

pytestmark = pytest.mark.tritonclient

ALL_CHECKS = (
    "health",
    "model_ready",
    "metadata",
    "config",
    "server_metadata",
    "identity",
    "classifier",
    "errors",
)
# The datatypes the script sends through identity_<name> models.
IDENTITY_TYPES = {
    "FP32": TensorProto.FLOAT,
    "INT64": TensorProto.INT64,
    "INT32": TensorProto.INT32,
    "UINT8": TensorProto.UINT8,
    "FP16": TensorProto.FLOAT16,
    "BOOL": TensorProto.BOOL,
    "BYTES": TensorProto.STRING,
}
TOLERANCE = 1e-6


def onnxruntime_outputs(model_file: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the saved model run in-process on one input batch."""
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": batch}), strict=True))


def as_ints(dims: list[str | int]) -> list[int]:
    """Shapes and dims as ints: tritonclient's as_json renders int64 fields as strings."""
    return [int(d) for d in dims]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The classifier in versions 1 and 2 (different weights), and one identity per type."""
    repo = tmp_path_factory.mktemp("tritonclient_models")
    onnx_models.save(onnx_models.classifier(seed=1), repo, "classifier", "1")
    onnx_models.save(onnx_models.classifier(seed=2), repo, "classifier", "2")
    for name, elem_type in IDENTITY_TYPES.items():
        onnx_models.save(onnx_models.identity(elem_type), repo, f"identity_{name.lower()}", "1")
    return repo


@pytest.fixture(scope="module")
def triton_python() -> Path:
    return triton_venv(os.environ) / "bin" / "python"


@pytest.fixture(scope="module")
def observed(triton_python: Path, repo: Path) -> Json:
    """Everything the script observed, from one run of it against one gateway."""
    with running_gateway(repo) as gateway:
        return run_script(triton_python, gateway.address, ALL_CHECKS)


@pytest.fixture(scope="module")
def classifier_batch(observed: Json) -> np.ndarray:
    return np.asarray(observed["classifier"]["input"], dtype=np.float32)


@pytest.fixture(scope="module")
def expected_v1(repo: Path, classifier_batch: np.ndarray) -> dict[str, np.ndarray]:
    return onnxruntime_outputs(repo / "classifier" / "1" / "model.onnx", classifier_batch)


@pytest.fixture(scope="module")
def expected_v2(repo: Path, classifier_batch: np.ndarray) -> dict[str, np.ndarray]:
    return onnxruntime_outputs(repo / "classifier" / "2" / "model.onnx", classifier_batch)


def output_data(infer: Json, name: str) -> np.ndarray:
    """One output of an observed infer as a float32 array."""
    outputs = ok(infer)["outputs"]
    assert name in outputs, f"output {name!r} missing; got {list(outputs)}"
    return np.asarray(outputs[name]["data"], dtype=np.float32)


def test_missing_triton_venv_fails_with_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception) as failure:
        triton_venv({TRITON_VENV_VARIABLE: str(tmp_path / "absent")})
    assert "bash .ci/run" in str(failure.value)


def test_server_is_live(observed: Json) -> None:
    assert ok(observed["health"]["live"]) is True


def test_server_is_ready(observed: Json) -> None:
    assert ok(observed["health"]["ready"]) is True


def test_model_is_ready_for_served_classifier(observed: Json) -> None:
    assert ok(observed["model_ready"]["classifier"]) is True
    assert ok(observed["model_ready"]["classifier_v1"]) is True


def test_model_is_not_ready_for_absent_model(observed: Json) -> None:
    assert ok(observed["model_ready"]["absent"]) is False


def test_model_metadata_input_is_fp32_with_dynamic_batch_dim(observed: Json) -> None:
    inputs = ok(observed["metadata"]["default"])["inputs"]
    assert [(i["name"], i["datatype"], as_ints(i["shape"])) for i in inputs] == [
        ("input", "FP32", [-1, 4])
    ]


def test_model_metadata_outputs_have_dynamic_batch_dim(observed: Json) -> None:
    outputs = ok(observed["metadata"]["default"])["outputs"]
    assert [(o["name"], o["datatype"], as_ints(o["shape"])) for o in outputs] == [
        ("probabilities", "FP32", [-1, 2]),
        ("logits", "FP32", [-1, 2]),
    ]


def test_model_metadata_platform_is_onnxruntime_onnx(observed: Json) -> None:
    assert ok(observed["metadata"]["default"])["platform"] == "onnxruntime_onnx"


def test_model_metadata_default_names_highest_version(observed: Json) -> None:
    metadata = ok(observed["metadata"]["default"])
    assert (metadata["name"], metadata["versions"]) == ("classifier", ["2"])


def test_model_metadata_pinned_names_that_version(observed: Json) -> None:
    assert ok(observed["metadata"]["v1"])["versions"] == ["1"]


def test_model_config_max_batch_size_is_positive(observed: Json) -> None:
    config = ok(observed["config"]["classifier"])["config"]
    assert config["max_batch_size"] > 0


def test_model_config_dims_leave_out_batch_dim(observed: Json) -> None:
    config = ok(observed["config"]["classifier"])["config"]
    assert [(i["name"], i["data_type"], as_ints(i["dims"])) for i in config["input"]] == [
        ("input", "TYPE_FP32", [4])
    ]
    assert [(o["name"], o["data_type"], as_ints(o["dims"])) for o in config["output"]] == [
        ("probabilities", "TYPE_FP32", [2]),
        ("logits", "TYPE_FP32", [2]),
    ]


def test_model_config_platform_is_onnxruntime_onnx(observed: Json) -> None:
    assert ok(observed["config"]["classifier"])["config"]["platform"] == "onnxruntime_onnx"


def test_server_metadata_name_is_onnxgate(observed: Json) -> None:
    assert ok(observed["server_metadata"]["server"])["name"] == "onnxgate"


@pytest.mark.parametrize("datatype", list(IDENTITY_TYPES))
def test_identity_returns_input_unchanged(observed: Json, datatype: str) -> None:
    assert datatype in observed["identity"], f"the script sent no {datatype} input"
    sent = observed["identity"][datatype]
    result = ok(sent["result"])
    assert result["output_names"] == ["y"]
    y = result["outputs"]["y"]
    assert y["datatype"] == datatype
    assert y["shape"] == [2, 3]
    assert y["dtype"] == sent["input_dtype"]
    assert y["element_types"] == sent["input_element_types"]
    assert y["data"] == sent["input"]


def test_classifier_outputs_match_onnxruntime(
    observed: Json, expected_v2: dict[str, np.ndarray]
) -> None:
    default = observed["classifier"]["default"]
    for name in ("probabilities", "logits"):
        np.testing.assert_allclose(
            output_data(default, name), expected_v2[name], rtol=0, atol=TOLERANCE, err_msg=name
        )


def test_model_version_one_pins_version_one(
    observed: Json, expected_v1: dict[str, np.ndarray], expected_v2: dict[str, np.ndarray]
) -> None:
    probabilities = output_data(observed["classifier"]["v1"], "probabilities")
    np.testing.assert_allclose(probabilities, expected_v1["probabilities"], rtol=0, atol=TOLERANCE)
    assert not np.allclose(probabilities, expected_v2["probabilities"], rtol=0, atol=TOLERANCE)


def test_response_names_the_version_that_served(observed: Json) -> None:
    classifier = observed["classifier"]
    assert ok(classifier["default"])["model_version"] == "2"
    assert ok(classifier["v1"])["model_version"] == "1"


def test_requested_outputs_return_only_those(
    observed: Json, expected_v2: dict[str, np.ndarray]
) -> None:
    logits_only = observed["classifier"]["logits_only"]
    assert ok(logits_only)["output_names"] == ["logits"]
    np.testing.assert_allclose(
        output_data(logits_only, "logits"), expected_v2["logits"], rtol=0, atol=TOLERANCE
    )


def test_wrong_shape_is_invalid_argument_naming_the_input(observed: Json) -> None:
    refused = error(observed["errors"]["wrong_shape"])
    assert refused["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "unexpected shape for input 'input'" in refused["message"]


def test_wrong_datatype_is_invalid_argument_naming_the_datatype(observed: Json) -> None:
    refused = error(observed["errors"]["wrong_datatype"])
    assert refused["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "data-type is 'FP64'" in refused["message"]


def test_unknown_model_is_not_found(observed: Json) -> None:
    assert error(observed["errors"]["unknown_model"])["status"] == "StatusCode.NOT_FOUND"
