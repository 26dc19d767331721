"""The gRPC server's call threads: the core count, one more for each long-held call running
and each call stalled waiting for its request message, up to the maximum; extras retire."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest
from grpc._server import _unary_response_in_pool

from gateway.api.call_threads import CallThreads
from tests.support.gateways import eventually


class _RpcEvent:
    call = None


def _runner(
    runner: object,
    event: object,
    state: object,
    behaviour: Callable[[Any], Any] | None,
    read_request: Callable[[], Any],
) -> Any:
    request = read_request()
    return request if behaviour is None else behaviour(request)


def _call(threads: CallThreads, read_request: Callable[[], Any],
          behaviour: Callable[[Any], Any] | None = None) -> Future[Any]:  # fmt: skip
    """A work item shaped as grpcio's server submits a unary-request call."""
    return threads.submit(_runner, _unary_response_in_pool, _RpcEvent(), None, behaviour,
                          read_request)  # fmt: skip


def test_calls_waiting_for_their_request_add_threads_up_to_the_maximum() -> None:
    threads = CallThreads(core=2, maximum=5, receive_timeout=10)
    arrived = threading.Event()
    waiting = threading.Semaphore(0)

    def read_request() -> str:
        waiting.release()
        arrived.wait(10)
        return "request"

    futures = [_call(threads, read_request) for _ in range(8)]
    for _ in range(5):
        assert waiting.acquire(timeout=10)
    assert threads.threads == 5
    assert not waiting.acquire(timeout=0.2)  # the other 3 wait for a thread to come free
    arrived.set()
    assert [f.result(10) for f in futures] == ["request"] * 8
    threads.shutdown()


def test_other_work_keeps_to_the_core_threads() -> None:
    threads = CallThreads(core=2, maximum=50, receive_timeout=10)
    release = threading.Event()
    futures = [threads.submit(release.wait, 10) for _ in range(6)]
    eventually(lambda: threads.threads == 2)
    assert sum(f.running() for f in futures) == 2
    release.set()
    assert all(f.result(10) for f in futures)
    assert threads.threads == 2
    threads.shutdown()


def test_threads_above_the_core_retire_when_idle() -> None:
    threads = CallThreads(core=1, maximum=6, receive_timeout=10, idle_seconds=0.2)
    barrier = threading.Barrier(6, timeout=10)
    futures = [_call(threads, barrier.wait) for _ in range(6)]
    for future in futures:
        future.result(10)
    eventually(lambda: threads.threads == 1, timeout=10)
    assert threads.submit(lambda: 42).result(10) == 42  # the core thread still serves
    threads.shutdown()


def test_calls_whose_request_has_arrived_keep_to_the_core_threads() -> None:
    threads = CallThreads(core=2, maximum=50, receive_timeout=10)
    release = threading.Event()
    started = threading.Semaphore(0)

    def behaviour(request: str) -> str:
        started.release()
        release.wait(10)
        return request

    futures = [_call(threads, lambda: "request", behaviour) for _ in range(6)]
    for _ in range(2):
        assert started.acquire(timeout=10)
    assert not started.acquire(timeout=0.2)  # no third call runs: the other 4 are queued
    assert threads.threads == 2
    release.set()
    assert [f.result(10) for f in futures] == ["request"] * 6
    assert threads.threads == 2
    threads.shutdown()


def test_a_handler_holding_its_thread_gets_one_beyond_the_core_until_it_ends() -> None:
    threads = CallThreads(core=1, maximum=10, receive_timeout=10)
    stream_open, stream_closed = threading.Event(), threading.Event()

    def stream(request: str) -> str:
        with threads.holding():  # as an open ModelStreamInfer stream does
            stream_open.set()
            stream_closed.wait(10)
        return "stream done"

    streaming = _call(threads, lambda: "first", stream)
    assert stream_open.wait(10)
    # The stream holds its thread; a unary call still has one to run on.
    assert _call(threads, lambda: "unary").result(10) == "unary"
    assert threads.threads == 2
    stream_closed.set()
    assert streaming.result(10) == "stream done"
    eventually(lambda: threads.threads == 1)  # the thread it counted has retired
    assert _call(threads, lambda: "after").result(10) == "after"
    threads.shutdown()


def test_results_and_exceptions_reach_the_future() -> None:
    threads = CallThreads(core=1, maximum=2, receive_timeout=10)
    assert threads.submit(lambda a, b=0: a + b, 1, b=2).result(10) == 3

    def fail() -> None:
        raise ValueError("bad call")

    with pytest.raises(ValueError, match="bad call"):
        threads.submit(fail).result(10)
    threads.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        threads.submit(lambda: None)


def test_executed_work_runs_on_the_core_threads_and_a_failure_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the ModelInfer lane hands over answers its call itself: no Future, and an error
    it did not answer leaves the thread serving the next."""
    threads = CallThreads(core=1, maximum=5, receive_timeout=10)
    done: list[str] = []
    finished = threading.Event()

    def fail() -> None:
        raise ValueError("unanswered")

    threads.execute(fail)
    threads.execute(done.append, "after the failure")
    threads.execute(finished.set)
    assert finished.wait(10)
    assert done == ["after the failure"]
    assert threads.threads == 1
    assert "unanswered" in caplog.text
    threads.shutdown()
