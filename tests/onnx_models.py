"""ONNX models for the tests, built with onnx.helper: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Every datatype the gateway serves: (OIP name, ONNX element type, numpy dtype).
SERVED_TYPES = [
    ("BOOL", TensorProto.BOOL, np.bool_),
    ("UINT8", TensorProto.UINT8, np.uint8),
    ("UINT16", TensorProto.UINT16, np.uint16),
    ("UINT32", TensorProto.UINT32, np.uint32),
    ("UINT64", TensorProto.UINT64, np.uint64),
    ("INT8", TensorProto.INT8, np.int8),
    ("INT16", TensorProto.INT16, np.int16),
    ("INT32", TensorProto.INT32, np.int32),
    ("INT64", TensorProto.INT64, np.int64),
    ("FP16", TensorProto.FLOAT16, np.float16),
    ("FP32", TensorProto.FLOAT, np.float32),
    ("FP64", TensorProto.DOUBLE, np.float64),
    ("BYTES", TensorProto.STRING, np.object_),
]


def _model(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, repo: Path, name: str, version: str) -> Path:
    """Write model as repo/name/version/model.onnx and return the path."""
    path = repo / name / version / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def classifier(features: int = 4, seed: int = 0) -> onnx.ModelProto:
    """input FP32 [N,features] -> Gemm 2 -> Softmax -> probabilities; plus logits."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1, (features, 2)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", features])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2]),
        ],
        [numpy_helper.from_array(weights, "W")],
    )
    return _model(graph)


def linear_classifier(weights: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """Like classifier(), with the given weights [features,2] and bias [2]: logits = xW + b."""
    features = weights.shape[0]
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "W", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "linear_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", features])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2]),
        ],
        [
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "B"),
        ],
    )
    return _model(graph)


def slow_classifier(seed: int, width: int = 512, layers: int = 12) -> onnx.ModelProto:
    """classifier(seed=seed)'s answers, computed next to `layers` square Gemms of `width` on
    the input that add zero: tens of times slower than classifier(), same outputs."""
    model = classifier(seed=seed)
    graph = model.graph
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.05, (4, width)).astype(np.float32), "Wup"),
             numpy_helper.from_array(np.zeros((1, 2), np.float32), "zero")]  # fmt: skip
    nodes = [helper.make_node("Gemm", ["input", "Wup"], ["busy0"])]
    for i in range(layers):
        weights = rng.normal(0, 1 / np.sqrt(width), (width, width)).astype(np.float32)
        inits.append(numpy_helper.from_array(weights, f"Wbusy{i}"))
        nodes.append(helper.make_node("Gemm", [f"busy{i}", f"Wbusy{i}"], [f"busy{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"busy{layers}"], ["busy_sum"], keepdims=1),
        helper.make_node("Mul", ["busy_sum", "zero"], ["nothing"]),  # [N,2] of zeros
        helper.make_node("Add", ["raw_logits", "nothing"], ["logits"]),
    ]
    old = list(graph.node)
    old[0].output[0] = "raw_logits"
    old[1].input[0] = "logits"
    new_graph = helper.make_graph(
        [old[0], *nodes, old[1]], "slow_classifier", list(graph.input), list(graph.output),
        [*graph.initializer, *inits],
    )  # fmt: skip
    return _model(new_graph)


def identity(elem_type: int) -> onnx.ModelProto:
    """x [N,3] -> Identity -> y [N,3], for one datatype."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", elem_type, ["N", 3])],
        [helper.make_tensor_value_info("y", elem_type, ["N", 3])],
    )
    return _model(graph)


def two_inputs() -> onnx.ModelProto:
    """a FP32 [N,2] + b FP32 [N,2] -> sum; a fixed-shape, non-batch model input c INT64 [3]."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Identity", ["c"], ["c_out"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("c", TensorProto.INT64, [3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("c_out", TensorProto.INT64, [3]),
        ],
    )
    return _model(graph)


def slow(width: int = 256, layers: int = 48) -> onnx.ModelProto:
    """x FP32 [N,width] through `layers` square Gemms: its run time grows with N."""
    rng = np.random.default_rng(1)
    nodes, inits, previous = [], [], "x"
    for i in range(layers):
        w = rng.normal(0, 1 / np.sqrt(width), (width, width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        nodes.append(helper.make_node("Gemm", [previous, f"W{i}"], [f"h{i}"]))
        previous = f"h{i}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        inits,
    )
    return _model(graph)


def busy(rows: int = 8192, width: int = 256, layers: int = 48) -> onnx.ModelProto:
    """x FP32 [1,width] -> y FP32 [1,width]: as slow as slow() on `rows` rows, from a request
    of a kilobyte (the input is expanded to `rows` inside the graph), so that many requests
    arrive at once while one runs."""
    model = slow(width, layers)
    graph = model.graph
    shape = numpy_helper.from_array(np.array([rows, width], np.int64), "rows_shape")
    expand = helper.make_node("Expand", ["x", "rows_shape"], ["x_rows"])
    gemms = list(graph.node)[:-1]
    gemms[0].input[0] = "x_rows"
    mean = helper.make_node("ReduceMean", [gemms[-1].output[0]], ["y"], axes=[0], keepdims=1)
    new_graph = helper.make_graph(
        [expand, *gemms, mean], "busy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        [*graph.initializer, shape],
    )  # fmt: skip
    return _model(new_graph)


def lookup() -> onnx.ModelProto:
    """index INT64 [N] -> Gather from a 3-entry table -> value FP32 [N]; an index past the
    table makes onnxruntime itself fail at run time (warm-up with index 0 succeeds)."""
    table = numpy_helper.from_array(np.array([1.0, 2.0, 3.0], dtype=np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "index"], ["value"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N"])],
        [table],
    )
    return _model(graph)
