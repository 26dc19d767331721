"""Progressive delivery in a minute: a bad candidate rolls itself back, a good one is promoted.

    python examples/rollout_demo.py [--interval 5s] [--keep]

Everything runs on this machine, in a temporary directory: one gateway
(`onnxgate serve --data-dir DIR`, which starts its own redis-server) and 400 requests/s of
varied standard-normal rows from `benchmarks/load.py`. Model `credit` gets three versions,
built here from the example credit model (examples/build_models.py):

    1  the baseline, serving everything
    2  a BAD candidate: the same answers, but onnxruntime fails on about 5% of rows (INTERNAL)
    3  a GOOD candidate: the baseline's weights plus noise of 1e-4, so its answers barely move

Then, with the real `gatectl` (what an operator types, and its output, are printed):

    gatectl rollout start credit --candidate 2 --steps 25,50,100 --interval 5s --min-requests 200

The gateway's rollout controller judges every interval (error rate per status against the
baseline's, p99, input and output drift) and, after two failed intervals, routes everything
back to version 1 by itself. The same plan for version 3 advances 25% -> 50% -> 100% and
promotes it. `gatectl rollout status` is printed after every judgement, then the history.
Neither candidate is about latency, and a sub-millisecond model's p99 over a few hundred
requests swings by tens of milliseconds on a busy small machine (25.7 against 7.0 ms seen with
another test suite on the same 2 cores): the plan lets p99 grow by up to 50 ms
(`--min-p99-increase-ms 50`; the default is 1 ms).

Exits 0 when candidate 2 ended `rolled_back` and candidate 3 `promoted`, else 1. The gateway
is sent SIGTERM and the directory removed at the end (`--keep` keeps it: the models, the
gateway's log, the load generator's output and the Redis data).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import onnx
from build_models import credit_v1  # run as a script: examples/ is on sys.path
from demo_support import (
    free_port,
    gatectl,
    heading,
    roll_out,
    run_demo,
    start_gateway,
    stop,
    wait_until_serving,
)
from onnx import TensorProto, helper, numpy_helper

from registry_client.cli.durations import parse_duration

REPO = Path(__file__).resolve().parent.parent
LOAD_GENERATOR = REPO / "benchmarks" / "load.py"
MODEL = "credit"
SEED = 20261126  # examples/build_models.py's: version 1 is the example credit v1
ERROR_SHARE = 0.05
NOISE = 1e-4
RATE = 400
STEPS = "25,50,100"
MIN_REQUESTS = 200


# --- the three versions -------------------------------------------------------------------


def baseline_model() -> onnx.ModelProto:
    """Version 1: the example credit model, weights from the examples' fixed seed."""
    return credit_v1(np.random.default_rng(SEED))


def erring_model(error_share: float = ERROR_SHARE) -> onnx.ModelProto:
    """Version 2: the baseline's answers, except that onnxruntime fails on every request with a
    row whose features[:, 0] is above the standard-normal quantile for 1 - error_share.

    A Gather from a one-entry table is indexed by (features[:, 0] > threshold): index 1 is out
    of range and the run fails. Its value is multiplied by 0 and added to the logits, so the
    answers are the baseline's and the Gather cannot be pruned. The threshold is positive, so
    the gateway's all-zeros warm-up run succeeds and the version loads."""
    model = baseline_model()
    gemm, softmax = model.graph.node
    gemm.output[0] = "raw_logits"
    threshold = NormalDist().inv_cdf(1.0 - error_share)
    constants: dict[str, np.ndarray[Any, Any]] = {
        "column_start": np.array([0], np.int64),
        "column_end": np.array([1], np.int64),
        "column_axis": np.array([1], np.int64),
        "threshold": np.array(threshold, np.float32),
        "one_entry": np.array([1.0], np.float32),
        "zero": np.array(0.0, np.float32),
    }
    nodes = [
        helper.make_node(
            "Slice", ["features", "column_start", "column_end", "column_axis"], ["column"]
        ),
        helper.make_node("Greater", ["column", "threshold"], ["too_high"]),
        helper.make_node("Cast", ["too_high"], ["slot"], to=TensorProto.INT64),  # 0 or 1
        helper.make_node("Gather", ["one_entry", "slot"], ["looked_up"], axis=0),
        helper.make_node("Mul", ["looked_up", "zero"], ["nothing"]),
        helper.make_node("Add", ["raw_logits", "nothing"], ["logits"]),
    ]
    graph = helper.make_graph(
        [gemm, *nodes, softmax],
        "credit_erring",
        list(model.graph.input),
        list(model.graph.output),
        [*model.graph.initializer, *(numpy_helper.from_array(v, k) for k, v in constants.items())],
    )
    return helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="demo")


def retrained_model(noise: float = NOISE) -> onnx.ModelProto:
    """Version 3: the baseline's weights plus a little noise, as a retrain on the same data
    might give: its probabilities differ in the 4th decimal, its output drift is nil."""
    model = baseline_model()
    rng = np.random.default_rng(SEED + 3)
    for index, tensor in enumerate(model.graph.initializer):
        weights = numpy_helper.to_array(tensor)
        noisy = weights + rng.normal(0.0, noise, weights.shape).astype(weights.dtype)
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(noisy, tensor.name))
    return model


def write_models(directory: Path) -> dict[str, Path]:
    """Save versions 1-3 under directory; version -> model file."""
    paths = {}
    for version, model in (("1", baseline_model()), ("2", erring_model()),
                           ("3", retrained_model())):  # fmt: skip
        onnx.checker.check_model(model)
        path = directory / "models" / MODEL / version / "model.onnx"
        path.parent.mkdir(parents=True)
        onnx.save(model, path)
        paths[version] = path
    return paths


# --- traffic ------------------------------------------------------------------------------


def start_traffic(work: Path, grpc_port: int, seconds: float) -> subprocess.Popen[bytes]:
    """The project's load generator, open loop: 1,000 different rows sent in turn, so that the
    bad candidate fails on its share of them and the drift checks see a distribution."""
    command = [
        sys.executable, str(LOAD_GENERATOR), "--target", f"127.0.0.1:{grpc_port}",
        "--model", MODEL, "--rate", str(RATE), "--distinct-payloads", "1000",
        "--duration", f"{seconds:g}", "--warmup", "0",
    ]  # fmt: skip
    with (work / "load.log").open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def demo(work: Path, interval: str) -> bool:
    seconds = parse_duration(interval)
    data_dir = work / "data"
    grpc_port = free_port()
    gateway = traffic = None
    # Neither candidate is about latency: p99 may grow by 50 ms (see the docstring).
    plan = ["--steps", STEPS, "--interval", interval, "--min-requests", str(MIN_REQUESTS),
            "--min-p99-increase-ms", "50"]  # fmt: skip
    try:
        heading("building model credit: 1 baseline, 2 fails on ~5% of rows, 3 retrained")
        paths = write_models(work)
        for version, path in paths.items():
            print(f"version {version}: {path}")

        heading("starting the gateway (its own redis-server in the temp dir)")
        gateway = start_gateway(work, grpc_port)
        print(f"onnxgate serve --data-dir {data_dir} --grpc-port {grpc_port}: pid {gateway.pid}")

        heading("registering the versions; version 1 serves everything")
        print(f"(gatectl runs with --data-dir {data_dir}: the gateway's private Redis)")
        for version, path in paths.items():
            flags = ["--create-model"] if version == "1" else []
            gatectl(data_dir, "register", MODEL, version, str(path), *flags)
        # Weight 0 gets the candidates loaded and warmed on the gateway before their rollout.
        gatectl(data_dir, "route", "set", MODEL, "--split", "1=100,2=0,3=0",
                "--reason", "baseline; candidates preloaded")  # fmt: skip
        wait_until_serving(grpc_port, MODEL)

        heading(f"traffic: benchmarks/load.py, {RATE} requests/s of 1,000 different rows")
        traffic = start_traffic(work, grpc_port, 30 * seconds + 120)
        time.sleep(2)  # some baseline traffic first, as in production

        heading("rollout of the BAD candidate 2")
        bad = roll_out(data_dir, MODEL, "2", plan, 12 * seconds + 60)
        heading("what happened to candidate 2")
        gatectl(data_dir, "rollout", "history", MODEL)
        print()
        gatectl(data_dir, "route", "history", MODEL, "--limit", "5")

        heading("rollout of the GOOD candidate 3 (still loaded: weight 0 in every rule)")
        good = roll_out(data_dir, MODEL, "3", plan, 12 * seconds + 60)
        heading("what happened to candidate 3")
        gatectl(data_dir, "rollout", "history", MODEL)
        print()
        gatectl(data_dir, "route", "show", MODEL)
    finally:
        stop(traffic, "the load generator")
        stop(gateway, "the gateway")

    heading("result")
    print(f"candidate 2: {bad} (expected rolled_back)")
    print(f"candidate 3: {good} (expected promoted)")
    return bad == "rolled_back" and good == "promoted"


def main() -> int:
    return run_demo(__doc__.splitlines()[0], "rollout", demo, "5s")


if __name__ == "__main__":
    sys.exit(main())
