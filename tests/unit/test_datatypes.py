"""Every served datatype makes the round trip, raw and typed, equal to onnxruntime's answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.support.wire import infer_request, output_arrays

SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 1, 255], [7, 8, 9]], dtype=np.uint8),
    "UINT16": np.array([[0, 1, 65535], [7, 8, 9]], dtype=np.uint16),
    "UINT32": np.array([[0, 1, 2**32 - 1], [7, 8, 9]], dtype=np.uint32),
    "UINT64": np.array([[0, 1, 2**64 - 1], [7, 8, 9]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127], [1, -1, 5]], dtype=np.int8),
    "INT16": np.array([[-32768, 0, 32767], [1, -1, 5]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1], [1, -1, 5]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1], [1, -1, 5]], dtype=np.int64),
    "FP16": np.array([[0.5, -1.25, 65504], [1e-3, 2, 3]], dtype=np.float16),
    "FP32": np.array([[0.5, -1.25, 3.4e38], [1e-30, np.inf, -0.0]], dtype=np.float32),
    "FP64": np.array([[0.5, -1.25, 1e308], [1e-300, -np.inf, 7]], dtype=np.float64),
    "BYTES": np.array([["a", "", "héllo wörld"], ["x y", "ß", "z" * 300]], dtype=object),
}
TYPED_DATATYPES = [name for name in SAMPLES if name != "FP16"]  # FP16 travels raw only


def _onnxruntime_answer(repo: Path, datatype: str, array: np.ndarray) -> np.ndarray:
    path = repo / f"identity_{datatype.lower()}" / "1" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {"x": array})[0]
    return result


def _expected(repo: Path, datatype: str) -> np.ndarray:
    expected = _onnxruntime_answer(repo, datatype, SAMPLES[datatype])
    if datatype == "BYTES":  # the wire carries UTF-8 bytes
        encoded = np.empty(expected.shape, dtype=object)
        encoded[...] = [[s.encode() for s in row] for row in expected]
        return encoded
    return expected


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_raw_round_trip_equals_onnxruntime(stub, model_repo, datatype):
    response = stub.ModelInfer(
        infer_request(f"identity_{datatype.lower()}", {"x": SAMPLES[datatype]})
    )
    got = output_arrays(response)["y"]
    assert response.outputs[0].datatype == datatype
    assert got.dtype == _expected(model_repo, datatype).dtype
    np.testing.assert_array_equal(got, _expected(model_repo, datatype))


@pytest.mark.parametrize("datatype", TYPED_DATATYPES)
def test_typed_contents_round_trip_equals_onnxruntime(stub, model_repo, datatype):
    response = stub.ModelInfer(
        infer_request(f"identity_{datatype.lower()}", {"x": SAMPLES[datatype]}, raw=False)
    )
    np.testing.assert_array_equal(output_arrays(response)["y"], _expected(model_repo, datatype))


def test_classifier_probabilities_equal_onnxruntime(stub, model_repo):
    features = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    path = model_repo / "classifier" / "2" / "model.onnx"
    expected = ort.InferenceSession(str(path)).run(["probabilities"], {"input": features})[0]
    response = stub.ModelInfer(infer_request("classifier", {"input": features}))
    np.testing.assert_allclose(output_arrays(response)["probabilities"], expected, rtol=1e-6)


def test_batch_of_zero_rows_is_answered_with_empty_outputs(stub):
    response = stub.ModelInfer(infer_request("identity_fp32", {"x": np.zeros((0, 3), np.float32)}))
    assert output_arrays(response)["y"].shape == (0, 3)
