"""The chaos tests' fault proxy, checked against a real redis-server."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from tests.support.fault_proxy import FaultProxy
from tests.support.gateways import eventually

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
    proxy.set_latency(0.5)
    started = time.monotonic()
    client.ping()
    assert time.monotonic() - started >= 1.0  # once each way
    proxy.restore()
    started = time.monotonic()
    client.ping()
    assert time.monotonic() - started < 0.5  # less than even one way's latency


def test_a_blackhole_answers_nothing_then_delivers_what_it_held(proxy):
    client = _client(proxy)  # used only while the proxy forwards: the usual timeout
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


def test_reset_and_close_break_open_connections_and_new_ones_work(proxy, redis_server):
    admin = redis.Redis.from_url(redis_server.url)  # straight to Redis, not through the proxy
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
        # Redis holds the BLPOP: the call is in flight when the break comes.
        eventually(lambda: admin.info("clients")["blocked_clients"] == 1)
        started = time.monotonic()
        breaker()
        waiter.join(timeout=5)
        assert outcome, f"{breaker.__name__} did not break the connection"
        assert time.monotonic() - started < 2
        assert _client(proxy).ping()
        eventually(lambda: admin.info("clients")["blocked_clients"] == 0)
    admin.close()
