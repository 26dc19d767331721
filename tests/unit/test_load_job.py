"""A load's budget and cancellation, and runs stopped at their deadline, on real threads and
real onnxruntime sessions."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest

from gateway.models.load_job import STOP_GRACE_SECONDS, LoadFailed, LoadJob
from gateway.models.run_deadlines import RunDeadlines
from tests.support import onnx_models
from tests.support.gateways import eventually

ROW = {"input": np.full((1, 4), 0.25, np.float32)}


def test_a_step_that_cannot_be_stopped_is_abandoned_at_the_deadline():
    never = threading.Event()
    job = LoadJob("stuck", timeout_seconds=0.5)

    def work(job: LoadJob) -> object:
        job.begin("session creation")
        never.wait()  # like onnxruntime creating a session: nothing can interrupt it
        return None

    started = time.monotonic()
    outcome = job.run(work)
    took = time.monotonic() - started
    assert outcome.result is None and not outcome.cancelled
    assert outcome.failure is not None and outcome.failure.kind == "timeout"
    assert str(outcome.failure) == (
        "session creation did not finish within the load timeout of 0.5 s"
        " (--load-timeout-seconds); not loaded"
    )
    assert 0.5 <= took < 0.5 + STOP_GRACE_SECONDS + 2
    assert job.cancelled.is_set()  # whatever the abandoned thread reaches for next is refused
    with pytest.raises(LoadFailed):
        job.begin("the warm-up run")
    never.set()


def test_cancelling_a_load_returns_at_once_and_runs_its_stop_actions():
    job = LoadJob("cancelled", timeout_seconds=60)
    stopped = threading.Event()
    entered = threading.Event()

    def work(job: LoadJob) -> object:
        job.on_cancel(stopped.set)
        entered.set()
        stopped.wait()
        return "too late"

    def cancel_once_entered() -> None:
        entered.wait(10)
        job.cancel()

    canceller = threading.Thread(target=cancel_once_entered)
    canceller.start()
    outcome = job.run(work)
    canceller.join(10)
    assert outcome.cancelled and outcome.result is None and outcome.failure is None
    assert stopped.is_set()


def test_a_load_failure_keeps_its_reason_and_a_defect_becomes_a_failure():
    def refuse(job: LoadJob) -> object:
        raise LoadFailed("sha256 mismatch", "artifact")

    outcome = LoadJob("refused", 10).run(refuse)
    assert outcome.failure is not None
    assert (str(outcome.failure), outcome.failure.kind) == ("sha256 mismatch", "artifact")

    def defect(job: LoadJob) -> object:
        raise KeyError("oops")

    outcome = LoadJob("defect", 10).run(defect)
    assert outcome.failure is not None and outcome.failure.kind == "rejected"
    assert "KeyError" in str(outcome.failure)


@pytest.fixture
def endless() -> ort.InferenceSession:
    """Instant on zeros, runs for ever on any other row."""
    model = onnx_models.looping_classifier(seed=1, fixed_trips=0, trips_per_unit=10**12)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_a_watched_run_is_terminated_once_its_deadline_passes(endless):
    deadlines = RunDeadlines(tick_seconds=0.01)
    deadlines.start()
    try:
        watch = deadlines.watch(time.monotonic() + 0.3)
        started = time.monotonic()
        with pytest.raises(Exception, match="terminate"):
            endless.run(None, ROW, watch.options)
        took = time.monotonic() - started
        assert watch.done()  # terminated because of its deadline
        assert 0.3 <= took < 10  # stopped near its deadline, not run for ever
        fast = deadlines.watch(time.monotonic() + 60)
        endless.run(None, {"input": np.zeros((1, 4), np.float32)}, fast.options)
        assert not fast.done()  # finished in time: not terminated
    finally:
        deadlines.stop()


def test_terminate_all_stops_every_run_at_once(endless):
    deadlines = RunDeadlines()
    errors: list[BaseException] = []

    def run() -> None:
        watch = deadlines.watch(time.monotonic() + 600)
        try:
            endless.run(None, ROW, watch.options)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    eventually(lambda: deadlines.watching() == 3)
    assert deadlines.terminate_all() == 3
    for thread in threads:
        thread.join(10)
    assert len(errors) == 3
