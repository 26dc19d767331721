"""Build the example repository committed under examples/models/.

`python examples/build_models.py [OUT_DIR]` writes a Triton-style layout:

    credit/1/model.onnx   logistic scorer: features FP32 [N,8] -> probabilities FP32 [N,2]
    credit/2/model.onnx   the same signature with a hidden layer and retrained weights
    echo/1/model.onnx     text: BYTES [N] passed through, with its word count as INT64 [N]

Weights come from a fixed seed, so the files are reproducible.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]
FEATURES = 8


def _save(model: onnx.ModelProto, path: Path) -> None:
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def credit_v1(rng: np.random.Generator) -> onnx.ModelProto:
    """One linear layer and a softmax over (decline, approve)."""
    weights = numpy_helper.from_array(rng.normal(0, 0.5, (FEATURES, 2)).astype(np.float32), "W")
    bias = numpy_helper.from_array(np.array([0.1, -0.1], dtype=np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["features", "W", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "credit_v1",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        [weights, bias],
    )
    return helper.make_model(graph, opset_imports=OPSET, producer_name="onnxgate-examples")


def credit_v2(rng: np.random.Generator) -> onnx.ModelProto:
    """A hidden layer of 16 with ReLU, then the same softmax head."""
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.4, (FEATURES, 16)).astype(np.float32), "W1"),
        numpy_helper.from_array(np.zeros(16, dtype=np.float32), "B1"),
        numpy_helper.from_array(rng.normal(0, 0.4, (16, 2)).astype(np.float32), "W2"),
        numpy_helper.from_array(np.zeros(2, dtype=np.float32), "B2"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["features", "W1", "B1"], ["h"]),
            helper.make_node("Relu", ["h"], ["hr"]),
            helper.make_node("Gemm", ["hr", "W2", "B2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "credit_v2",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    return helper.make_model(graph, opset_imports=OPSET, producer_name="onnxgate-examples")


def echo() -> onnx.ModelProto:
    """Strings in, the same strings and their word counts out."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["text"], ["echoed"]),
            helper.make_node("StringSplit", ["text"], ["_tokens", "words"], delimiter=""),
        ],
        "echo",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [
            helper.make_tensor_value_info("echoed", TensorProto.STRING, ["N"]),
            helper.make_tensor_value_info("words", TensorProto.INT64, ["N"]),
        ],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 20)], producer_name="onnxgate-examples"
    )


def build(out_dir: Path) -> None:
    """Write every example model under out_dir."""
    rng = np.random.default_rng(20261126)
    _save(credit_v1(rng), out_dir / "credit" / "1" / "model.onnx")
    _save(credit_v2(rng), out_dir / "credit" / "2" / "model.onnx")
    _save(echo(), out_dir / "echo" / "1" / "model.onnx")


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "models")
