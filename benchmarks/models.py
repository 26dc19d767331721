"""Build the benchmark ONNX models (tiny, medium, tabular30) as a Triton-style repository."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gateway._proto import grpc_service_pb2 as pb

OPSET = 17
# IR 8 is the version that introduced opset 17: older onnxruntime builds load it too.
IR_VERSION = 8
SEED = 0
BATCH_DIM = "N"


def _gemm(
    rng: np.random.Generator, prefix: str, x: str, n_in: int, n_out: int
) -> tuple[onnx.NodeProto, list[TensorProto], str]:
    """Return a Gemm node y = x @ W + b with He-scaled random weights, its initialisers, y."""
    weight = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
    bias = (rng.standard_normal(n_out) * 0.01).astype(np.float32)
    w_name, b_name, y_name = f"{prefix}_W", f"{prefix}_b", f"{prefix}_out"
    node = helper.make_node("Gemm", [x, w_name, b_name], [y_name], name=prefix)
    inits = [numpy_helper.from_array(weight, w_name), numpy_helper.from_array(bias, b_name)]
    return node, inits, y_name


def _mlp(
    name: str, in_name: str, n_in: int, hidden: list[int], n_out: int, out_name: str, softmax: bool
) -> onnx.ModelProto:
    """Build a Gemm/Relu MLP with a dynamic batch dimension and an optional final Softmax."""
    rng = np.random.default_rng(SEED)
    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    x, width = in_name, n_in
    for i, size in enumerate(hidden):
        node, weights, y = _gemm(rng, f"fc{i}", x, width, size)
        nodes.append(node)
        inits.extend(weights)
        x = f"relu{i}_out"
        nodes.append(helper.make_node("Relu", [y], [x], name=f"relu{i}"))
        width = size
    node, weights, y = _gemm(rng, f"fc{len(hidden)}", x, width, n_out)
    nodes.append(node)
    inits.extend(weights)
    if softmax:
        nodes.append(helper.make_node("Softmax", [y], [out_name], name="softmax", axis=-1))
    else:
        # Rename the last Gemm output so the graph output has the public name.
        nodes[-1].output[0] = out_name
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, [BATCH_DIM, n_in])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [BATCH_DIM, n_out])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnxgate-benchmarks"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _save(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write a model to path, creating parent directories."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(out))
    return out


def build_tiny(path: str | Path) -> Path:
    """FP32 input [N,32] -> Gemm 64 -> Relu -> Gemm 2 -> Softmax -> probabilities [N,2]."""
    return _save(_mlp("tiny", "input", 32, [64], 2, "probabilities", softmax=True), path)


def build_medium(path: str | Path) -> Path:
    """FP32 input [N,256] -> Gemm 1024 -> Relu -> Gemm 1024 -> Relu -> Gemm 10 -> logits [N,10]."""
    return _save(_mlp("medium", "input", 256, [1024, 1024], 10, "logits", softmax=False), path)


def build_tabular30(path: str | Path) -> Path:
    """FP32 input [N,30] -> Gemm 64 -> Relu -> Gemm 2 -> Softmax -> probabilities [N,2]."""
    return _save(_mlp("tabular30", "input", 30, [64], 2, "probabilities", softmax=True), path)


def build_heavy(path: str | Path) -> Path:
    """FP32 input [N,512] -> Gemm 2304 -> Relu -> Gemm 2304 -> Relu -> Gemm 10: over 1 ms per
    batch-1 run on one core here, where batching pays."""
    return _save(_mlp("heavy", "input", 512, [2304, 2304], 10, "logits", softmax=False), path)


BUILDERS: dict[str, Callable[[str | Path], Path]] = {
    "tiny": build_tiny,
    "medium": build_medium,
    "tabular30": build_tabular30,
    "heavy": build_heavy,
}


def tiny_request() -> pb.ModelInferRequest:
    """A batch-1 ModelInfer request for the tiny model, every input value 1."""
    request = pb.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 32])
    request.raw_input_contents.append(np.ones((1, 32), np.float32).tobytes())
    return request


def build_repository(out_dir: str | Path, names: list[str]) -> dict[str, Path]:
    """Write OUT_DIR/<model>/1/model.onnx for each named model; return name -> path."""
    return {name: BUILDERS[name](Path(out_dir) / name / "1" / "model.onnx") for name in names}


def _parse_names(value: str) -> list[str]:
    """Parse and check a comma-separated model list."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BUILDERS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {unknown}; choose from {list(BUILDERS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path, help="repository root to write")
    parser.add_argument("--models", type=_parse_names, default=list(BUILDERS))
    args = parser.parse_args(argv)
    for name, path in build_repository(args.out_dir, args.models).items():
        print(f"{name}: {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
