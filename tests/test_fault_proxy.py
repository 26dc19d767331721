"""The chaos tests' fault proxy, checked against a real redis-server."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from tests.fault_proxy import FaultProxy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def proxy(redis_server):
    started = FaultProxy("127.0.0.1", redis_server.port).start()
    yield started
    started.stop()


def _client(proxy: FaultProxy, timeout: float = 5.0) -> redis.Redis:
    return redis.Redis.from_url(proxy.url, socket_timeout=timeout, socket_connect_timeout=timeout)


def test_traffic_passes_through_unchanged(proxy):
    client = _client(proxy)
    client.set("key", b"\x00value\xff" * 1000)
    assert client.get("key") == b"\x00value\xff" * 1000
    assert proxy.open_connections() == 1


def test_latency_delays_each_round_trip(proxy):
    client = _client(proxy)
    client.ping()
    proxy.set_latency(0.2)
    started = time.monotonic()
    client.ping()
    assert time.monotonic() - started >= 0.4  # once each way
    proxy.restore()
    started = time.monotonic()
    client.ping()
    assert time.monotonic() - started < 0.2


def test_a_blackhole_answers_nothing_then_delivers_what_it_held(proxy):
    client = _client(proxy, timeout=0.3)
    client.set("counter", 0)
    proxy.blackhole()
    with pytest.raises(redis.TimeoutError):
        _client(proxy, timeout=0.3).ping()  # a new connection is accepted, never answered
    proxy.restore()
    patient = _client(proxy, timeout=10)
    patient.ping()  # connected before: opened now, it waits in the hole
    held = threading.Thread(target=patient.incr, args=("counter",))
    proxy.blackhole()
    held.start()
    time.sleep(0.3)
    assert held.is_alive()
    proxy.restore()
    held.join(timeout=5)
    assert int(client.get("counter") or 0) == 1


def test_reset_and_close_break_open_connections_and_new_ones_work(proxy):
    for breaker in (proxy.reset, proxy.close):
        no_retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)  # see the break itself
        client = redis.Redis.from_url(proxy.url, socket_timeout=10, retry=no_retry)
        outcome: list[BaseException] = []

        def wait_on_empty_list(
            c: redis.Redis = client, seen: list[BaseException] = outcome
        ) -> None:
            try:
                c.blpop(["nothing-comes"], timeout=8)  # in flight when the break comes
            except redis.ConnectionError as exc:
                seen.append(exc)

        waiter = threading.Thread(target=wait_on_empty_list)
        waiter.start()
        eventually_open = time.monotonic() + 5
        while proxy.open_connections() == 0 and time.monotonic() < eventually_open:
            time.sleep(0.01)
        time.sleep(0.1)
        started = time.monotonic()
        breaker()
        waiter.join(timeout=5)
        assert outcome, f"{breaker.__name__} did not break the connection"
        assert time.monotonic() - started < 2
        assert _client(proxy).ping()
