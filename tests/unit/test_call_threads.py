"""The gRPC server's call threads: a thread per call up to the core count, one more for each
call whose thread waits for its request message, up to the maximum; idle extras retire."""

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


def _runner(runner: object, event: object, state: object, behaviour: object,
            read_request: Callable[[], Any]) -> Any:  # fmt: skip
    return read_request()


def _call(threads: CallThreads, read_request: Callable[[], Any]) -> Future[Any]:
    """A work item shaped as grpcio's server submits a unary-request call."""
    return threads.submit(_runner, _unary_response_in_pool, _RpcEvent(), None, None, read_request)


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
