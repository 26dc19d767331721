"""Dynamic batching: concurrent requests run together and get exactly their own rows back."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.errors import DeadlineExceeded
from gateway.models.batcher import DynamicBatcher
from gateway.models.run_deadlines import RunDeadlines
from registry_client.cli.main import main as gatectl
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.gateways import eventually, make_gateway
from tests.support.wire import infer_request


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


class GatedSession:
    """Our Session protocol over a real onnxruntime session; the first run says it has begun
    (`entered`) and waits for the gate, so the requests sent meanwhile queue up; every run's
    row count is recorded."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.runs: list[int] = []

    def run(
        self,
        output_names: Sequence[str] | None,
        feeds: dict[str, np.ndarray],
        run_options: ort.RunOptions | None = None,
    ) -> list[np.ndarray]:
        if not self.runs:
            self.entered.set()
            self.gate.wait(30)
        self.runs.append(next(iter(feeds.values())).shape[0])
        return list(self._session.run(output_names, feeds, run_options))


@pytest.fixture
def classifier() -> ort.InferenceSession:
    return _session(onnx_models.classifier(seed=4))


def _batcher(session: GatedSession, max_rows: int = 1024, delay: float = 0.0) -> DynamicBatcher:
    return DynamicBatcher(session, "test", max_rows, delay, lambda *_: None)


def _queued(batcher: DynamicBatcher, count: int) -> bool:
    return len(batcher._queue) == count  # the test waits for requests to queue


def _submit_while_gated(gated: GatedSession, batcher: DynamicBatcher, requests, outputs):
    """Send requests[0], then the rest while the first run is held; returns the answers."""
    with ThreadPoolExecutor(len(requests)) as pool:
        first = pool.submit(batcher.run, outputs[0], requests[0], None)
        assert gated.entered.wait(10), "the first run did not begin"
        rest = [pool.submit(batcher.run, o, r, None)
                for r, o in zip(requests[1:], outputs[1:], strict=True)]  # fmt: skip
        eventually(lambda: _queued(batcher, len(requests) - 1))
        gated.gate.set()
        return [first.result(10)] + [f.result(10) for f in rest]


def test_mixed_batch_sizes_get_exactly_their_own_rows(classifier):
    gated = GatedSession(classifier)
    batcher = _batcher(gated)
    rng = np.random.default_rng(0)
    requests = [{"input": rng.normal(size=(n, 4)).astype(np.float32)} for n in (1, 3, 1, 7, 2)]
    names = [["probabilities", "logits"]] * len(requests)
    answers = _submit_while_gated(gated, batcher, requests, names)
    assert gated.runs == [1, 13]  # the first alone, the other four together
    for request, answer in zip(requests, answers, strict=True):
        expected = classifier.run(["probabilities", "logits"], request)
        for got, want in zip(answer, expected, strict=True):
            np.testing.assert_array_equal(got, want)
    batcher.stop()


def test_requests_that_cannot_share_a_run_are_run_apart(classifier):
    gated = GatedSession(classifier)
    batcher = _batcher(gated, max_rows=4)
    rng = np.random.default_rng(1)
    requests = [{"input": rng.normal(size=(n, 4)).astype(np.float32)} for n in (1, 2, 2, 1, 3)]
    names = [["logits"], ["logits"], ["probabilities"], ["logits"], ["logits"]]
    answers = _submit_while_gated(gated, batcher, requests, names)
    # other outputs asked for: a run of their own; max_rows 4: 2 + 1 rows, then 3
    assert gated.runs == [1, 3, 2, 3]
    for request, name, answer in zip(requests, names, answers, strict=True):
        np.testing.assert_array_equal(answer[0], classifier.run(name, request)[0])
    batcher.stop()


def test_a_deadline_that_passes_in_the_queue_is_not_run(classifier):
    gated = GatedSession(classifier)
    batcher = _batcher(gated)
    data = {"input": np.ones((2, 4), np.float32)}
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher.run, ["logits"], data, None)
        assert gated.entered.wait(10), "the first run did not begin"
        late_deadline = time.monotonic() + 0.05
        late = pool.submit(batcher.run, ["logits"], data, late_deadline)
        kept = pool.submit(batcher.run, ["logits"], data, time.monotonic() + 30)
        eventually(lambda: _queued(batcher, 2))
        # The late request's deadline passes while it waits.
        eventually(lambda: time.monotonic() > late_deadline)
        gated.gate.set()
        first.result(10)
        with pytest.raises(DeadlineExceeded, match="queued for a batch"):
            late.result(10)
        assert kept.result(10)[0].shape == (2, 2)
    assert gated.runs == [2, 2]  # the expired request's rows were never run
    batcher.stop()


def test_a_request_alone_does_not_wait_for_company(classifier):
    batcher = DynamicBatcher(classifier, "test", 1024, 30.0, lambda *_: None)
    started = time.monotonic()
    batcher.run(["logits"], {"input": np.ones((1, 4), np.float32)}, None)
    assert time.monotonic() - started < 10  # far below the 30 s it would wait for company
    batcher.stop()


def test_a_model_error_reaches_every_request_of_the_batch():
    class Failing:
        def run(self, output_names, feeds, run_options=None):
            raise RuntimeError("model failed")

    batcher = DynamicBatcher(Failing(), "test", 1024, 0.0, lambda *_: None)
    with pytest.raises(RuntimeError, match="model failed"):
        batcher.run(["y"], {"x": np.ones((1, 3), np.float32)}, None)
    batcher.stop()


@pytest.fixture
def batching(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two gateways over the same classifier: batching on (1 ms delay) and off."""
    onnx_models.save(onnx_models.classifier(seed=4), tmp_path, "classifier", "1")
    on = make_gateway(tmp_path, batch_delay_us=1000, grpc_threads=16)
    off = make_gateway(tmp_path)
    yield f"127.0.0.1:{on.grpc_port}", f"127.0.0.1:{off.grpc_port}"
    on.stop(grace_seconds=1)
    off.stop(grace_seconds=1)
    rows = on.registry.get_sample_value("onnxgate_batch_size_sum",
                                        {"model": "classifier", "version": "1"})  # fmt: skip
    assert rows == 2 * sum(range(1, 9)) * 10  # every row run exactly once, batched or not


def test_through_the_gateway_batched_answers_equal_unbatched_ones(batching):
    on, off = batching
    rng = np.random.default_rng(2)
    inputs = [rng.normal(size=(1 + i % 8, 4)).astype(np.float32) for i in range(80)]

    def answers(address: str) -> list[bytes]:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)

            def call(i: int) -> bytes:
                request = infer_request("classifier", {"input": inputs[i]}, request_id=str(i))
                return stub.ModelInfer(request, timeout=10).SerializeToString()

            with ThreadPoolExecutor(16) as pool:
                return list(pool.map(call, range(len(inputs))))

    assert answers(on) == answers(off)
    assert answers(on) == answers(off)


def test_a_models_batching_settings_in_the_registry_apply_to_its_versions(redis_server, tmp_path):
    client = RegistryClient.from_url(redis_server.url)
    out, err = io.StringIO(), io.StringIO()
    url = ["--redis-url", redis_server.url]
    assert gatectl([*url, "model", "create", "credit", "--owner", "risk"], {}, out, err) == 0
    assert gatectl([*url, "model", "create", "credit", "--batch-delay-us", "500",
                    "--max-batch-size", "64"], {}, out, err) == 0  # fmt: skip
    shown = client.show_model("credit")
    assert (shown["owner"], shown["batch_delay_us"], shown["max_batch_size"]) == (
        "risk", "500", "64")  # an update leaves the fields it does not name  # fmt: skip
    for name in ("credit", "fraud"):
        path = onnx_models.save(onnx_models.classifier(seed=4), tmp_path, name, "1")
        if name == "fraud":
            client.create_model(name, actor="ops")
        client.register_version(name, "1", path, actor="ops")
        client.set_route(name, [Split("1", 100)], actor="ops")
    gateway = make_gateway(None, redis_url=redis_server.url)  # batching off by default
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for name in ("credit", "fraud"):
                stub.ModelInfer(infer_request(name, {"input": np.ones((3, 4), np.float32)}))
            too_many = infer_request("credit", {"input": np.ones((65, 4), np.float32)})
            with pytest.raises(grpc.RpcError) as error:
                stub.ModelInfer(too_many)
            assert "batch-size must be <= 64" in (error.value.details() or "")
        runs = gateway.registry.get_sample_value
        assert runs("onnxgate_batch_size_count", {"model": "credit", "version": "1"}) == 1
        assert runs("onnxgate_batch_size_count", {"model": "fraud", "version": "1"}) == 0
    finally:
        gateway.stop(grace_seconds=1)
        client.close()


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--batch-delay-us", "-2"], "batch_delay_us: expected -1 (off) to 1000000"),
     (["--max-batch-size", "0"], "max_batch_size: expected 1 to 65536")],
)  # fmt: skip
def test_batching_settings_out_of_range_are_rejected(redis_server, argv, message):
    out, err = io.StringIO(), io.StringIO()
    code = gatectl(["--redis-url", redis_server.url, "model", "create", "credit", *argv], {},
                   out, err)  # fmt: skip
    assert code == 1 and message in err.getvalue()


def test_a_batch_still_running_at_its_deadline_is_stopped():
    model = onnx_models.looping_classifier(seed=1, fixed_trips=0, trips_per_unit=10**12)
    endless = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    deadlines = RunDeadlines(tick_seconds=0.01)
    deadlines.start()
    stopped = threading.Event()
    batcher = DynamicBatcher(endless, "test", 1024, 0.0, lambda *_: None, deadlines, stopped.set)
    try:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="the run was stopped"):
            batcher.run(["logits"], {"input": np.ones((1, 4), np.float32)},
                        time.monotonic() + 0.3)  # fmt: skip
        assert time.monotonic() - started < 5
        assert stopped.is_set()
    finally:
        batcher.stop()
        deadlines.stop()
