"""Bad requests are refused before onnxruntime runs, with Triton's status and wording."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from gateway._proto import grpc_service_pb2 as pb
from tests.support.wire import infer_request

FEATURES = np.ones((1, 4), np.float32)


def _error(stub, request: pb.ModelInferRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    return err.value


def _invalid(stub, request: pb.ModelInferRequest) -> str:
    error = _error(stub, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    return str(error.details())


def test_missing_inputs_are_named(stub):
    request = infer_request("two_inputs", {"a": np.ones((1, 2), np.float32)})
    assert _invalid(stub, request) == (
        "expected 3 inputs but got 1 inputs for model 'two_inputs'. Got input(s) ['a'], but"
        " missing required input(s) ['b','c']. Please provide all required input(s)."
    )


def test_unknown_input_is_named(stub):
    request = infer_request("classifier", {"X": FEATURES})
    assert _invalid(stub, request) == "unexpected inference input 'X' for model 'classifier'"


def test_extra_input_is_named(stub):
    request = infer_request("classifier", {"input": FEATURES, "extra": FEATURES})
    assert _invalid(stub, request) == "unexpected inference input 'extra' for model 'classifier'"


def test_duplicate_input_is_refused(stub):
    request = infer_request(
        "two_inputs",
        {"a": np.ones((1, 2), np.float32), "b": np.ones((1, 2), np.float32)},
    )
    request.inputs.add(name="a", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.ones((1, 2), np.float32).tobytes())
    assert "input 'a' appears more than once" in _invalid(stub, request)


def test_wrong_datatype_names_both_types(stub):
    request = infer_request("classifier", {"input": FEATURES.astype(np.float64)})
    assert _invalid(stub, request) == (
        "inference input 'input' data-type is 'FP64', but model 'classifier' expects 'FP32'"
    )


def test_wrong_dims_show_expected_and_given_shape(stub):
    request = infer_request("classifier", {"input": np.ones((1, 5), np.float32)})
    assert _invalid(stub, request) == (
        "unexpected shape for input 'input' for model 'classifier'. Expected [-1,4], got [1,5]."
    )


def test_wrong_rank_is_refused(stub):
    request = infer_request("classifier", {"input": np.ones((4,), np.float32)})
    assert "Expected [-1,4], got [4]." in _invalid(stub, request)


def test_fixed_dims_must_match(stub):
    request = infer_request(
        "two_inputs",
        {
            "a": np.ones((1, 2), np.float32),
            "b": np.ones((1, 2), np.float32),
            "c": np.ones((4,), np.int64),
        },
    )
    assert "unexpected shape for input 'c'" in _invalid(stub, request)
    assert "Expected [3], got [4]." in _invalid(stub, request)


def test_negative_dims_are_refused(stub):
    request = infer_request("classifier", {"input": FEATURES})
    del request.inputs[0].shape[:]
    request.inputs[0].shape.extend([-1, 4])
    assert "got [-1,4]" in _invalid(stub, request)


def test_byte_size_mismatch_shows_both_sizes(stub):
    request = infer_request("classifier", {"input": FEATURES})
    request.raw_input_contents[0] += b"\0" * 4
    assert _invalid(stub, request) == (
        "input byte size mismatch for input 'input' for model 'classifier'. Expected 16, got 20"
    )


def test_raw_count_must_equal_input_count(stub):
    request = infer_request("classifier", {"input": FEATURES})
    request.raw_input_contents.append(b"")
    assert _invalid(stub, request) == (
        "expected 1 raw_input_contents entries (one per input) but got 2 for model 'classifier'"
    )


def test_raw_and_contents_together_are_refused(stub):
    request = infer_request("classifier", {"input": FEATURES})
    request.inputs[0].contents.fp32_contents.extend([1.0] * 4)
    assert _invalid(stub, request) == (
        "contents field must not be specified when using raw_input_contents for 'input' for"
        " model 'classifier'"
    )


def test_typed_contents_count_must_match_shape(stub):
    request = infer_request("classifier", {"input": FEATURES}, raw=False)
    request.inputs[0].contents.fp32_contents.append(2.0)
    assert _invalid(stub, request) == (
        "unexpected number of elements in contents for input 'input' for model 'classifier'."
        " Expected 4, got 5"
    )


def test_typed_contents_in_the_wrong_field_are_refused(stub):
    request = infer_request("classifier", {"input": FEATURES}, raw=False)
    request.inputs[0].contents.ClearField("fp32_contents")
    request.inputs[0].contents.int_contents.extend([1, 2, 3, 4])
    assert "sets contents.int_contents; expected contents.fp32_contents" in _invalid(stub, request)


def test_typed_values_outside_the_datatype_range_are_refused(stub):
    request = infer_request("identity_int8", {"x": np.zeros((1, 3), np.int8)}, raw=False)
    request.inputs[0].contents.int_contents[0] = 300
    assert "outside the range of INT8" in _invalid(stub, request)


def test_fp16_in_typed_contents_is_refused(stub):
    request = infer_request("identity_fp16", {"x": np.zeros((1, 3), np.float16)})
    request.ClearField("raw_input_contents")
    assert "can only be sent in raw_input_contents" in _invalid(stub, request)


def test_bytes_element_count_must_match_shape(stub):
    request = infer_request("identity_bytes", {"x": np.array([["a", "b", "c"]], dtype=object)})
    request.inputs[0].shape[0] = 2
    assert _invalid(stub, request) == (
        "unexpected number of BYTES elements for input 'x' for model 'identity_bytes'."
        " Expected 6, got 3"
    )


def test_truncated_bytes_element_is_refused(stub):
    request = infer_request("identity_bytes", {"x": np.array([["a", "b", "c"]], dtype=object)})
    request.raw_input_contents[0] = request.raw_input_contents[0][:-1]
    assert _invalid(stub, request) == (
        "BYTES element 2 of input 'x' for model 'identity_bytes' declares 1 bytes but only 0 remain"
    )


def test_bytes_that_are_not_utf8_are_refused(stub):
    request = infer_request(
        "identity_bytes", {"x": np.array([[b"\xff", b"b", b"c"]], dtype=object)}
    )
    assert "is not valid UTF-8" in _invalid(stub, request)


def test_unknown_requested_output_is_named(stub):
    request = infer_request("classifier", {"input": FEATURES}, outputs=["scores"])
    assert _invalid(stub, request) == "unexpected inference output 'scores' for model 'classifier'"


def test_batch_above_max_batch_size_is_refused(stub):
    request = infer_request("classifier", {"input": np.ones((1025, 4), np.float32)})
    assert "batch-size must be <= 1024" in _invalid(stub, request)


def test_unknown_model_is_not_found(stub):
    error = _error(stub, infer_request("absent", {"input": FEATURES}))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.details() == "Request for unknown model: 'absent' has no available versions"


def test_unknown_version_is_not_found(stub):
    error = _error(stub, infer_request("classifier", {"input": FEATURES}, version="9"))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "'classifier' version '9'" in str(error.details())


@pytest.mark.parametrize(
    "name", ["../classifier", "a/../b", "/etc/passwd", " classifier", "x" * 129]
)
def test_invalid_model_names_are_not_found_and_touch_nothing(stub, name):
    error = _error(stub, infer_request(name, {"input": FEATURES}))
    assert error.code() is grpc.StatusCode.NOT_FOUND


def test_a_refused_request_leaves_the_gateway_serving(stub):
    _invalid(stub, infer_request("classifier", {"input": np.ones((1, 5), np.float32)}))
    response = stub.ModelInfer(infer_request("classifier", {"input": FEATURES}))
    assert response.model_version == "2"
