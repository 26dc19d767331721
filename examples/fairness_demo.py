"""Accuracy and fairness on real labels, judged while the candidate is still a shadow.

    python examples/fairness_demo.py [--interval 4s] [--keep]

Everything runs on this machine, in a temporary directory: one gateway (`onnxgate serve
--data-dir DIR`, with its own redis-server) and a credit-scoring application sending 100
requests/s, each with a request id and the applicant's age band as a segment
(`segment.age_band`). The true outcome of each application is known two seconds later, and
sent back as a label naming the request id, as a lender's repayment data would be.

Model `credit` (binary, approve = class 1, judged per age band) gets three versions:

    1  the baseline: a logistic scorer of the applicant's features
    2  an UNFAIR candidate: the same scorer, minus a penalty on young applicants' approval
       score (read from the age feature): still ranks well overall, but approves far fewer
       young applicants than older ones with the same repayment prospects
    3  a GOOD candidate: retrained on the same data (the baseline's weights plus noise)

Both candidates are rolled out with the same plan: a shadow phase first, where the candidate
answers nobody and its predictions are logged and joined with the labels like the baseline's,
then 50% and 100%. The plan gates on labels: the candidate's AUC may be at most 0.1 below the
baseline's, no age band's approval rate may be more than 0.15 from another's (demographic
parity), and a third of the candidate's predictions must have their label before a step is
judged (until then the rollout waits for labels). The plan turns off the checks a model
change always trips (argmax agreement, output drift): here the labels judge; and a p99 may
grow by 50 ms, as a sub-millisecond model's p99 swings that much on a busy small machine.

Candidate 2 is rolled back in the shadow phase, having answered no caller; candidate 3, whose
evaluation on a held-out labelled set (`gatectl evaluate`, the baseline's too) the plan
requires, is promoted.
Exits 0 when that is how they end, else 1.
"""

from __future__ import annotations

import csv
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnx
from demo_support import (  # run as a script: examples/ is on sys.path
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

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from registry_client import Label, RegistryClient
from registry_client.cli.durations import parse_duration
from registry_client.connection import private_redis_url

MODEL = "credit"
SEED = 20261203
FEATURES = 8  # 7 financial features, then the applicant's (standardised) age
BANDS = ("18-29", "30-49", "50+")
AGE_CENTRES = (-1.5, 0.0, 1.5)
YOUNG_PENALTY = 3.0  # logits taken off young applicants' approval score by version 2
RATE = 100  # requests per second
LABEL_DELAY_SECONDS = 2.0
PLAN_GATES = ["--max-auc-drop", "0.1", "--max-fairness-gap", "0.15",
              "--min-label-coverage", "0.33", "--min-labels", "600", "--label-wait", "60s",
              "--min-agreement", "0", "--max-psi", "100", "--min-requests", "100",
              "--min-p99-increase-ms", "50"]  # fmt: skip
# The gateway writes predictions and joins labels every half second (defaults: 1 s), and logs
# every prediction of the demo's traffic (a cap of 100 a second would cut its bursts).
GATEWAY_FLAGS = ["--prediction-hold-seconds", "0.5", "--prediction-flush-seconds", "0.5",
                 "--label-join-seconds", "0.5", "--shadow-max-cpu-busy", "1",
                 "--prediction-log-max-per-second", "1000"]  # fmt: skip
_RNG = np.random.default_rng(SEED)
TRUE_WEIGHTS = _RNG.normal(0.0, 1.0, FEATURES - 1) * 0.8


# --- the world and the three versions -----------------------------------------------------


def applicants(count: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Rows of features, each row's age band, and whether each would repay (1) — which does
    not depend on age."""
    bands = rng.integers(0, len(BANDS), count)
    rows = rng.normal(0.0, 1.0, (count, FEATURES)).astype(np.float32)
    rows[:, -1] = np.array(AGE_CENTRES, np.float32)[bands] + rng.normal(0, 0.3, count)
    repays = (rows[:, :-1] @ TRUE_WEIGHTS + rng.normal(0.0, 1.0, count) > 0).astype(np.int64)
    return rows, [BANDS[b] for b in bands], repays


def scorer(weights: np.ndarray, young_penalty: float = 0.0) -> onnx.ModelProto:
    """features FP32 [N,8] -> probabilities FP32 [N,2] (decline, approve): a softmax of the
    logits (-s/2, s/2), s = features[:, :7] . weights, minus `young_penalty` times how far the
    age feature is below -0.75 (young applicants only)."""
    half = np.zeros((FEATURES, 2), np.float32)
    half[:-1, 0], half[:-1, 1] = -weights / 2, weights / 2
    constants = {
        "W": half,
        "age_start": np.array([FEATURES - 1], np.int64),
        "age_end": np.array([FEATURES], np.int64),
        "axis": np.array([1], np.int64),
        "young_edge": np.array(-0.75, np.float32),
        "penalty": np.array([0.0, -young_penalty], np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["features", "W"], ["fair_logits"]),
        helper.make_node("Slice", ["features", "age_start", "age_end", "axis"], ["age"]),
        helper.make_node("Sub", ["young_edge", "age"], ["below_edge"]),
        helper.make_node("Relu", ["below_edge"], ["youth"]),
        helper.make_node("Mul", ["youth", "penalty"], ["shift"]),
        helper.make_node("Add", ["fair_logits", "shift"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "credit_scorer",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(v, k) for k, v in constants.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def write_models(directory: Path) -> dict[str, Path]:
    retrained = TRUE_WEIGHTS + np.random.default_rng(SEED + 3).normal(0, 0.05, FEATURES - 1)
    models = {"1": scorer(TRUE_WEIGHTS), "2": scorer(TRUE_WEIGHTS, YOUNG_PENALTY),
              "3": scorer(retrained)}  # fmt: skip
    paths = {}
    for version, model in models.items():
        path = directory / "models" / MODEL / version / "model.onnx"
        path.parent.mkdir(parents=True)
        onnx.save(model, path)
        paths[version] = path
    return paths


def write_evaluation_set(directory: Path) -> list[str]:
    """A held-out labelled set, as `gatectl evaluate` takes it; its arguments."""
    rows, bands, repays = applicants(3000, np.random.default_rng(SEED + 10))
    np.savez(directory / "holdout.npz", features=rows)
    np.save(directory / "holdout_labels.npy", repays)
    with (directory / "holdout_segments.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["age_band"])
        writer.writerows([band] for band in bands)
    return ["--data", str(directory / "holdout.npz"), "--labels",
            str(directory / "holdout_labels.npy"), "--segments",
            str(directory / "holdout_segments.csv")]  # fmt: skip


# --- the application and its outcomes ------------------------------------------------------


class Lender:
    """Sends applications at RATE per second, and LABEL_DELAY_SECONDS after each, its outcome
    as a label (through RegistryClient.put_labels, in batches once a second)."""

    def __init__(self, grpc_port: int, data_dir: Path) -> None:
        self._port = grpc_port
        self._registry = RegistryClient.from_url(private_redis_url(data_dir))
        self._outcomes: deque[tuple[float, str, int]] = deque()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._apply, daemon=True),
                         threading.Thread(target=self._label, daemon=True)]  # fmt: skip
        self.sent = self.labelled = 0
        self.answered_by: Counter[str] = Counter()  # version -> applications it answered

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._registry.close()

    def _apply(self) -> None:
        rng = np.random.default_rng(SEED + 1)
        with grpc.insecure_channel(f"127.0.0.1:{self._port}") as channel, \
                ThreadPoolExecutor(8) as pool:  # fmt: skip
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            started = time.monotonic()
            while not self._stopping.is_set():
                rows, bands, repays = applicants(RATE // 10, rng)
                for row, band, repay in zip(rows, bands, repays, strict=True):
                    self.sent += 1
                    pool.submit(self._send, stub, f"application-{self.sent}", row, band,
                                int(repay))  # fmt: skip
                started += 0.1  # open loop: RATE / 10 every 100 ms
                self._stopping.wait(max(started - time.monotonic(), 0.0))

    def _send(self, stub: pb_grpc.GRPCInferenceServiceStub, request_id: str, row: np.ndarray,
              band: str, repays: int) -> None:  # fmt: skip
        request = pb.ModelInferRequest(model_name=MODEL, id=request_id)
        request.inputs.add(name="features", datatype="FP32", shape=[1, FEATURES])
        request.raw_input_contents.append(row.astype(np.float32).tobytes())
        request.parameters["segment.age_band"].string_param = band
        try:
            response = stub.ModelInfer(request, timeout=5)
        except grpc.RpcError:
            return  # not answered: nothing to label
        self.answered_by[response.model_version] += 1  # one thread at a time per key: the GIL
        self._outcomes.append((time.monotonic(), request_id, repays))

    def _label(self) -> None:
        while not self._stopping.wait(1.0):
            due = time.monotonic() - LABEL_DELAY_SECONDS
            batch = []
            while self._outcomes and self._outcomes[0][0] <= due:
                _, request_id, repays = self._outcomes.popleft()
                batch.append(Label(request_id, repays))
            if batch:
                self._registry.put_labels(MODEL, batch)
                self.labelled += len(batch)


# --- the demo -----------------------------------------------------------------------------


def demo(work: Path, interval: str) -> bool:
    seconds = parse_duration(interval)
    data_dir = work / "data"
    grpc_port = free_port()
    gateway = None
    lender: Lender | None = None
    plan = ["--shadow-first", interval, "--steps", "50,100", "--interval", interval,
            *PLAN_GATES]  # fmt: skip
    try:
        heading("model credit: 1 baseline, 2 unfair to young applicants, 3 retrained")
        paths = write_models(work)
        evaluation_set = write_evaluation_set(work)

        heading("starting the gateway (its own redis-server in the temp dir)")
        gateway = start_gateway(work, grpc_port, GATEWAY_FLAGS)
        gatectl(data_dir, "model", "create", MODEL, "--task", "binary", "--score-output",
                "probabilities:1", "--segments", "age_band")  # fmt: skip
        for version, path in paths.items():
            gatectl(data_dir, "register", MODEL, version, str(path))
        gatectl(data_dir, "route", "set", MODEL, "--split", "1=100,2=0,3=0",
                "--reason", "baseline; candidates preloaded")  # fmt: skip
        wait_until_serving(grpc_port, MODEL)

        heading(f"applications: {RATE}/s with an age band; outcomes {LABEL_DELAY_SECONDS:g} s"
                " later, as labels")  # fmt: skip
        lender = Lender(grpc_port, data_dir)
        lender.start()
        time.sleep(3 * seconds)  # the baseline's labels first, as in production
        gatectl(data_dir, "accuracy", MODEL, "--since", "5m")

        heading("rollout of the UNFAIR candidate 2")
        unfair = roll_out(data_dir, MODEL, "2", plan, 20 * seconds + 90)
        print(f"\ncandidate 2 answered {lender.answered_by['2']} of {lender.sent} applications")
        gatectl(data_dir, "rollout", "history", MODEL)
        print()
        gatectl(data_dir, "fairness", MODEL, "--segment", "age_band", "--version", "2",
                "--role", "shadow", "--against", "1", "--since", "10m")  # fmt: skip

        heading("candidate 3: evaluated on a held-out labelled set, then rolled out")
        # --require-evaluation with --max-auc-drop compares the two versions' evaluations on
        # the same set: the baseline's too.
        gatectl(data_dir, "evaluate", MODEL, "1", *evaluation_set, show=False)
        gatectl(data_dir, "evaluate", MODEL, "3", *evaluation_set)
        good = roll_out(data_dir, MODEL, "3", ["--require-evaluation", *plan],
                        20 * seconds + 90)  # fmt: skip
        gatectl(data_dir, "rollout", "history", MODEL)
        print()
        gatectl(data_dir, "accuracy", MODEL, "--since", "10m")
    finally:
        if lender is not None:
            lender.stop()
        stop(gateway, "the gateway")

    heading("result")
    print(f"candidate 2: {unfair} (expected rolled_back)")
    print(f"candidate 3: {good} (expected promoted)")
    never_answered = lender is not None and lender.answered_by["2"] == 0
    print(f"candidate 2 answered no application: {never_answered} (expected True)")
    return unfair == "rolled_back" and good == "promoted" and never_answered


def main() -> int:
    return run_demo(__doc__.splitlines()[0], "fairness", demo, "4s")


if __name__ == "__main__":
    sys.exit(main())
