"""The gRPC server's call threads: grow on demand up to their maximum, shrink when idle."""

from __future__ import annotations

import threading

import pytest

from gateway.api.call_threads import CallThreads
from tests.conftest import eventually


def test_grows_to_the_maximum_and_no_further() -> None:
    threads = CallThreads(core=2, maximum=5, receive_timeout=10)
    release = threading.Event()
    started = threading.Semaphore(0)

    def hold() -> str:
        started.release()
        release.wait(10)
        return "done"

    futures = [threads.submit(hold) for _ in range(8)]
    for _ in range(5):
        assert started.acquire(timeout=10)
    assert threads.threads == 5
    assert not started.acquire(timeout=0.2)  # the other 3 wait for a thread to come free
    release.set()
    assert [f.result(10) for f in futures] == ["done"] * 8
    assert threads.threads == 5
    threads.shutdown()


def test_threads_above_the_core_retire_when_idle() -> None:
    threads = CallThreads(core=1, maximum=6, receive_timeout=10, idle_seconds=0.2)
    barrier = threading.Barrier(6, timeout=10)
    futures = [threads.submit(barrier.wait) for _ in range(6)]
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
