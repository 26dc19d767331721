"""The faulty candidate models in onnx_models, run on real onnxruntime sessions: each answers
as classifier(seed=1) except in its one controlled way, on the share of rows it promises."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.models.loader import ORT_ERRORS, load_version
from gateway.settings import Settings
from registry_client.repository import VersionSource
from tests.support import onnx_models

REQUESTS = 4000
OUTPUTS = ["probabilities", "logits"]


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the failing Gather's error is expected; keep stderr quiet
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )


def rows(seed: int, count: int = REQUESTS) -> np.ndarray:
    """count standard-normal rows [count, 4], as the canary tests draw them."""
    return np.random.default_rng(seed).standard_normal((count, 4)).astype(np.float32)


def run(sess: ort.InferenceSession, x: np.ndarray) -> list[np.ndarray]:
    return list(sess.run(OUTPUTS, {"input": x}))


@pytest.fixture(scope="module")
def baseline() -> ort.InferenceSession:
    return session(onnx_models.classifier(seed=1))


FAULTY = {
    "erring 0.05": lambda: onnx_models.erring_classifier(1, 0.05),
    "erring 0.5": lambda: onnx_models.erring_classifier(1, 0.5),  # threshold 0: zeros still run
    "erring 0": lambda: onnx_models.erring_classifier(1, 0.0),
    "disagreeing 0.10": lambda: onnx_models.disagreeing_classifier(1, 0.10),
    "disagreeing 1": lambda: onnx_models.disagreeing_classifier(1, 1.0),
    "timed 0": lambda: onnx_models.timed_classifier(1, 0.0),
    "timed 1.5": lambda: onnx_models.timed_classifier(1, 1.5),
    "timed 4.5": lambda: onnx_models.timed_classifier(1, 4.5),
}


def _io(sess: ort.InferenceSession) -> list[tuple[str, str, list[object]]]:
    return [(a.name, a.type, a.shape) for a in [*sess.get_inputs(), *sess.get_outputs()]]


@pytest.mark.parametrize("name", list(FAULTY))
def test_zeros_run_and_signature_is_the_classifiers(name, baseline):
    sess = session(FAULTY[name]())
    assert _io(sess) == _io(baseline)
    zeros = np.zeros((1, 4), np.float32)
    for got, want in zip(run(sess, zeros), run(baseline, zeros), strict=True):
        np.testing.assert_allclose(got, want)


@pytest.mark.parametrize("name", list(FAULTY))
def test_the_gateway_loads_and_warms_it_up(name, tmp_path: Path):
    path = onnx_models.save(FAULTY[name](), tmp_path, "candidate", "1")
    metrics = GatewayMetrics(CollectorRegistry())
    settings = Settings(max_version_memory_bytes=0)  # no memory probe: not what is tested
    version = load_version(VersionSource("candidate", "1", path), settings, metrics)
    try:
        assert [spec.name for spec in version.signature.inputs] == ["input"]
    finally:
        version.close()


@pytest.mark.timeout(120)  # 8,000 runs: 24 s seen on a busy machine
def test_erring_classifier_fails_on_its_share_and_answers_right_otherwise(baseline):
    sess = session(onnx_models.erring_classifier(1, 0.05))
    xs = rows(11)
    failed = np.zeros(REQUESTS, bool)
    for i, x in enumerate(xs):
        try:
            answers = run(sess, x[None, :])
        except ORT_ERRORS:
            failed[i] = True
            continue
        for got, want in zip(answers, run(baseline, x[None, :]), strict=True):
            np.testing.assert_allclose(got, want)
    assert 0.03 <= failed.mean() <= 0.07, failed.mean()
    threshold = np.float32(NormalDist().inv_cdf(0.95))
    np.testing.assert_array_equal(failed, xs[:, 0] > threshold)  # exactly the rows promised


def test_erring_classifier_fails_a_whole_request_with_one_bad_row(baseline):
    sess = session(onnx_models.erring_classifier(1, 0.05))
    xs = rows(12, 8)
    xs[:, 0] = 0.0
    run(sess, xs)  # all rows good
    xs[5, 0] = 3.0
    with pytest.raises(ORT_ERRORS):
        run(sess, xs)


def test_disagreeing_classifier_swaps_logits_on_its_share(baseline):
    sess = session(onnx_models.disagreeing_classifier(1, 0.10))
    xs = rows(13)
    probabilities, logits = run(sess, xs)
    want_probabilities, want_logits = run(baseline, xs)
    disagree = probabilities.argmax(axis=1) != want_probabilities.argmax(axis=1)
    assert 0.07 <= disagree.mean() <= 0.13, disagree.mean()
    swapped = xs[:, 1] > np.float32(NormalDist().inv_cdf(0.90))
    np.testing.assert_array_equal(disagree, swapped)  # no ties among standard-normal rows
    np.testing.assert_allclose(logits[~swapped], want_logits[~swapped])
    np.testing.assert_allclose(probabilities[~swapped], want_probabilities[~swapped])
    np.testing.assert_allclose(logits[swapped], want_logits[swapped][:, ::-1])
    np.testing.assert_allclose(probabilities[swapped], want_probabilities[swapped][:, ::-1])


def test_disagreeing_classifier_one_row_at_a_time_matches_the_batch(baseline):
    sess = session(onnx_models.disagreeing_classifier(1, 0.10))
    xs = rows(14, 400)
    batch = run(sess, xs)
    for i, x in enumerate(xs):
        for got, want in zip(run(sess, x[None, :]), batch, strict=True):
            np.testing.assert_allclose(got[0], want[i], rtol=1e-6)


@pytest.mark.parametrize("milliseconds", [0.0, 1.5, 4.5])
def test_timed_classifier_answers_as_the_classifier(milliseconds, baseline):
    sess = session(onnx_models.timed_classifier(1, milliseconds))
    xs = rows(15, 200)
    for got, want in zip(run(sess, xs), run(baseline, xs), strict=True):
        np.testing.assert_allclose(got, want)
    for x in xs[:20]:
        for got, want in zip(run(sess, x[None, :]), run(baseline, x[None, :]), strict=True):
            np.testing.assert_allclose(got, want)


def test_timed_classifier_work_grows_with_milliseconds():
    """Its layers, not its timings (the machine is shared): 4.5 ms has ~3x 1.5 ms's work."""

    def gemms(model: onnx.ModelProto) -> int:
        return sum(node.op_type == "Gemm" for node in model.graph.node)

    fast, slow = onnx_models.timed_classifier(1, 1.5), onnx_models.timed_classifier(1, 4.5)
    assert 2.8 <= gemms(slow) / gemms(fast) <= 3.2
    assert slow.ByteSize() < 2 * 1024 * 1024  # one shared matrix, however many layers


@pytest.mark.parametrize(
    "build",
    [
        lambda: onnx_models.erring_classifier(1, 0.6),  # zeros would fail the warm-up
        lambda: onnx_models.erring_classifier(1, -0.1),
        lambda: onnx_models.disagreeing_classifier(1, 1.5),
        lambda: onnx_models.disagreeing_classifier(1, 0.1, features=1),
    ],
)
def test_shares_out_of_range_are_refused(build):
    with pytest.raises(ValueError):
        build()
