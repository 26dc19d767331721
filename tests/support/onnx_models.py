"""ONNX models for the tests, built with onnx.helper: nothing is downloaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist

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


# A tensor of interface(): name, ONNX element type, shape (a str dimension is symbolic).
TensorSpec = tuple[str, int, Sequence[int | str]]


def interface(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> onnx.ModelProto:
    """A model with exactly these inputs and outputs, to read its signature; it is not meant
    to run. The inputs are unused; each output reshapes a one-element constant to dimensions
    drawn at random, so that shape inference cannot replace the declared (symbolic) ones."""
    nodes, initializers = [], []
    for i, (name, elem_type, shape) in enumerate(outputs):
        prefix = f"output{i}_"
        if elem_type == TensorProto.STRING:
            value = np.array([b""], dtype=np.object_)
        else:
            value = np.zeros(1, helper.tensor_dtype_to_np_dtype(elem_type))
        initializers.append(numpy_helper.from_array(value, prefix + "value"))
        nodes += [
            helper.make_node("RandomUniform", [], [prefix + "random"], shape=[len(shape)]),
            helper.make_node("Cast", [prefix + "random"], [prefix + "dims"], to=TensorProto.INT64),
            helper.make_node("Reshape", [prefix + "value", prefix + "dims"], [name]),
        ]
    graph = helper.make_graph(
        nodes, "interface",
        [helper.make_tensor_value_info(n, t, list(s)) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, list(s)) for n, t, s in outputs],
        initializers,
    )  # fmt: skip
    return _model(graph)


# Faulty candidates for canary tests: each is classifier(features, seed) with the same inputs
# and outputs, wrong in one controlled way on a known share of standard-normal rows.


def _upper_quantile(share: float) -> float:
    """The standard-normal x with P(X > x) = share: +inf for 0 (no row), -inf for 1 (all)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"a share is within [0, 1], not {share}")
    if share == 0.0:
        return float("inf")
    if share == 1.0:
        return float("-inf")
    return NormalDist().inv_cdf(1.0 - share)


def _rewired_classifier(
    features: int,
    seed: int,
    name: str,
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
) -> onnx.ModelProto:
    """classifier(features, seed) with `nodes` between its Gemm and its Softmax: the Gemm's
    output is renamed "raw_logits", and `nodes` must compute "logits" from it (and "input")."""
    graph = classifier(features=features, seed=seed).graph
    gemm, softmax = graph.node
    gemm.output[0] = "raw_logits"
    new_graph = helper.make_graph(
        [gemm, *nodes, softmax], name, list(graph.input), list(graph.output),
        [*graph.initializer, *initializers],
    )  # fmt: skip
    return _model(new_graph)


def _column_above(
    column: int, threshold: float, output: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes for `output` BOOL [N,1] = input[:, column] > threshold (compared in float32)."""
    prefix = f"{output}_"
    initializers = [
        numpy_helper.from_array(np.array([column], np.int64), prefix + "start"),
        numpy_helper.from_array(np.array([column + 1], np.int64), prefix + "end"),
        numpy_helper.from_array(np.array([1], np.int64), prefix + "axis"),
        numpy_helper.from_array(np.array(threshold, np.float32), prefix + "threshold"),
    ]
    nodes = [
        helper.make_node(
            "Slice",
            ["input", prefix + "start", prefix + "end", prefix + "axis"],
            [prefix + "column"],
        ),
        helper.make_node("Greater", [prefix + "column", prefix + "threshold"], [output]),
    ]
    return nodes, initializers


def erring_classifier(seed: int, error_share: float, features: int = 4) -> onnx.ModelProto:
    """classifier(features, seed) that onnxruntime fails on a share of standard-normal rows.

    A request with a row whose input[:, 0] is above the standard-normal quantile for
    1 - error_share makes session.run raise (a Gather from a one-entry table with index 1, the
    index being input[:, 0] > threshold); on every other request it answers exactly as
    classifier(features, seed) (the gathered value is added to the logits times zero, so the
    Gather cannot be pruned). error_share is within [0, 0.5], so that the threshold is >= 0
    and the all-zeros warm-up input runs; 0 never fails.
    """
    if not 0.0 <= error_share <= 0.5:
        raise ValueError(f"error_share is within [0, 0.5] (zeros must run), not {error_share}")
    nodes, initializers = _column_above(0, _upper_quantile(error_share), "too_high")
    initializers += [
        numpy_helper.from_array(np.array([1.0], np.float32), "one_entry"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes += [
        helper.make_node("Cast", ["too_high"], ["slot"], to=TensorProto.INT64),  # 0 or 1
        helper.make_node("Gather", ["one_entry", "slot"], ["looked_up"], axis=0),  # [N,1]
        helper.make_node("Mul", ["looked_up", "zero"], ["nothing"]),
        helper.make_node("Add", ["raw_logits", "nothing"], ["logits"]),
    ]
    return _rewired_classifier(features, seed, "erring_classifier", nodes, initializers)


def disagreeing_classifier(seed: int, disagree_share: float, features: int = 4) -> onnx.ModelProto:
    """classifier(features, seed) that swaps the two logits on a share of standard-normal rows.

    On rows whose input[:, 1] is above the standard-normal quantile for 1 - disagree_share,
    logits (and so probabilities) come out as [l1, l0] instead of [l0, l1]: the argmax differs
    from classifier(features, seed)'s on exactly those rows unless l0 == l1. Every other row
    is answered exactly as classifier(features, seed) answers it. It never fails at run time.
    """
    if features < 2:
        raise ValueError("disagreeing_classifier reads input[:, 1]: features must be >= 2")
    nodes, initializers = _column_above(1, _upper_quantile(disagree_share), "disagree")
    initializers.append(numpy_helper.from_array(np.array([1, 0], np.int64), "swap"))
    nodes += [
        helper.make_node("Gather", ["raw_logits", "swap"], ["swapped_logits"], axis=1),
        helper.make_node("Where", ["disagree", "swapped_logits", "raw_logits"], ["logits"]),
    ]
    return _rewired_classifier(features, seed, "disagreeing_classifier", nodes, initializers)


def repeated_slow_classifier(seed: int, layers: int, width: int = 512) -> onnx.ModelProto:
    """classifier(seed=seed)'s exact answers, computed next to `layers` Gemms that add zero.

    Like slow_classifier(), but every busy Gemm multiplies by the same width x width signed
    permutation matrix (dense to the Gemm): the model stays about width*width*4 bytes (1 MB
    at 512) however many layers it has, the matrix stays in cache so that the run time grows
    linearly with `layers` (slow_classifier()'s distinct matrices make 512 x 48 a 50 MB file
    whose run time depends on memory bandwidth), and the busy values keep their magnitudes
    exactly (no inf/NaN to leak into the answers through the multiplication by zero). Run
    time grows with N.
    """
    if layers < 0:
        raise ValueError(f"layers is >= 0, not {layers}")
    rng = np.random.default_rng(seed)
    # Orthogonal and exact in float32, built without LAPACK (whose threads crawl on a busy
    # machine); the Gemm is dense, so its zeros cost as much as any other entry.
    turn = np.zeros((width, width), np.float32)
    turn[np.arange(width), rng.permutation(width)] = rng.choice([-1.0, 1.0], width)
    initializers = [
        numpy_helper.from_array(rng.normal(0, 0.5, (4, width)).astype(np.float32), "Wup"),
        numpy_helper.from_array(np.zeros((1, 2), np.float32), "zero"),
    ]
    if layers:  # an unused initializer makes onnxruntime warn
        initializers.append(numpy_helper.from_array(turn, "Wturn"))
    nodes = [helper.make_node("Gemm", ["input", "Wup"], ["busy0"])]
    nodes += [
        helper.make_node("Gemm", [f"busy{i}", "Wturn"], [f"busy{i + 1}"]) for i in range(layers)
    ]
    nodes += [
        helper.make_node("ReduceSum", [f"busy{layers}"], ["busy_sum"], keepdims=1),  # [1,1]
        helper.make_node("Mul", ["busy_sum", "zero"], ["nothing"]),  # [1,2] of zeros
        helper.make_node("Add", ["raw_logits", "nothing"], ["logits"]),
    ]
    return _rewired_classifier(4, seed, "repeated_slow_classifier", nodes, initializers)


# Calibration of timed_classifier(), measured with onnxruntime 1.32 on this machine's
# 2-core AMD EPYC (1 MB L2 per core), intra_op_num_threads=1, 2000 single-row standard-normal
# runs each: repeated_slow_classifier(width=512) costs TIMED_MS_PER_LAYER per layer on top of
# TIMED_MS_BASE (least squares over 0-250 layers: 0.0228-0.0230 ms a layer). Measured
# (median / p99 ms, two runs, the machine shared): timed_classifier(seed, 1.0) 0.90-0.97 /
# 1.35-1.40; 1.5: 1.35-1.40 / 1.71-1.88; 2.0: 2.00-2.02 / 2.65-3.94; 3.0: 2.66-3.10 /
# 3.63-3.77; 4.5: 4.14-4.70 / 6.31-6.65; 6.0: 5.64-5.90 / 7.77-9.79. Run alternately, 1.5 and
# 4.5 gave median ratios 2.7-2.8 (p99 2.3-2.7) and 1.5 and 5.0 3.0-3.1 (p99 2.6-3.2): p99 is
# noisy, compare medians.
TIMED_WIDTH = 512
TIMED_MS_BASE = 0.02
TIMED_MS_PER_LAYER = 0.023


def timed_classifier(seed: int, milliseconds: float) -> onnx.ModelProto:
    """classifier(seed=seed)'s exact answers, taking roughly `milliseconds` per single-row run.

    repeated_slow_classifier(seed, layers, TIMED_WIDTH), the layers chosen by the calibration
    above (at least 0: below TIMED_MS_BASE it is as fast as it gets). Run time is per row: a
    request of N rows takes about N times as long. The machine is shared, so a run can take
    much longer than this; compare models by their medians, and by p99 only loosely.
    """
    layers = max(0, round((milliseconds - TIMED_MS_BASE) / TIMED_MS_PER_LAYER))
    return repeated_slow_classifier(seed, layers, TIMED_WIDTH)


def looping_classifier(seed: int, fixed_trips: int, trips_per_unit: int = 0) -> onnx.ModelProto:
    """classifier(seed=seed)'s answers behind an ONNX Loop of `fixed_trips` + `trips_per_unit`
    x sum(|input|) iterations (about a microsecond each): with a huge `fixed_trips` its warm-up
    never ends; with `fixed_trips` 0 the warm-up (all zeros) is instant and a request of
    non-zero rows runs as long as `trips_per_unit` makes it."""
    body = helper.make_graph(
        [
            helper.make_node("Tanh", ["carry_in"], ["carry_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carry_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carry_out", TensorProto.FLOAT, [1]),
        ],
    )
    nodes = [
        helper.make_node("Abs", ["input"], ["magnitude"]),
        helper.make_node("ReduceSum", ["magnitude"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "per_unit"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["variable_trips"], to=TensorProto.INT64),
        helper.make_node("Add", ["variable_trips", "fixed"], ["trips"]),
        helper.make_node("Loop", ["trips", "keep_going", "seed_carry"], ["carry"], body=body),
        # The carry times zero joins the logits, so the loop cannot be pruned as dead code.
        helper.make_node("Mul", ["carry", "zero"], ["nothing"]),
        helper.make_node("Add", ["raw_logits", "nothing"], ["logits"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array(float(trips_per_unit), np.float32), "per_unit"),
        numpy_helper.from_array(np.array(fixed_trips, np.int64), "fixed"),
        numpy_helper.from_array(np.array(True), "keep_going"),
        numpy_helper.from_array(np.zeros(1, np.float32), "seed_carry"),
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
    ]
    return _rewired_classifier(4, seed, "looping_classifier", nodes, initializers)


def memory_bomb(gib: float, seed: int = 0) -> onnx.ModelProto:
    """classifier(seed=seed)'s answers, computed next to an Expand of the input's mean row
    to [gib GiB / 16 B, 4] FP32 that is summed and added times zero: a file of a few hundred
    bytes whose every run allocates `gib` GiB at once, whatever N (from the input, so that
    onnxruntime cannot fold it away when it creates the session)."""
    rows = int(gib * 2**30) // (4 * 4)
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean_row"], axes=[0], keepdims=1),  # [1,4]
        helper.make_node("Expand", ["mean_row", "bomb_shape"], ["bomb"]),
        helper.make_node("ReduceSum", ["bomb"], ["bomb_sum"], keepdims=1),  # [1,1]
        helper.make_node("Mul", ["bomb_sum", "zero"], ["nothing"]),  # [1,2] of zeros
        helper.make_node("Add", ["raw_logits", "nothing"], ["logits"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([rows, 4], np.int64), "bomb_shape"),
        numpy_helper.from_array(np.zeros((1, 2), np.float32), "zero"),
    ]
    return _rewired_classifier(4, seed, "memory_bomb", nodes, initializers)
