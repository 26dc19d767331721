"""The rollout controller on its own, ticked by hand against a real redis-server: the leader
lease (one leader, handed over at stop, taken over after its TTL), fencing of a leader that
lost its lease, unreadable documents, a manual rule change pausing and notifying, and an
interval without enough traffic waiting rather than judging."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry

from gateway.metrics.rollout import RolloutMetrics
from gateway.rollout.controller import RolloutController
from registry_client.client import RegistryClient
from registry_client.records.leases import lease_holder
from registry_client.records.rule_documents import Split
from registry_client.rollout.store import RolloutStore
from tests.support import onnx_models
from tests.support.gateways import eventually
from tests.support.redis_server import RedisServer


class Clock:
    """Time that moves when told to, and can run a callback the next time it is read."""

    def __init__(self) -> None:
        self.now = time.time()
        self.on_next_read: Callable[[], None] | None = None

    def __call__(self) -> float:
        if self.on_next_read is not None:
            callback, self.on_next_read = self.on_next_read, None
            callback()
        return self.now


@pytest.fixture
def registry(redis_server: RedisServer, tmp_path: Path) -> Iterator[RegistryClient]:
    client = RegistryClient.from_url(redis_server.url)
    client.create_model("credit", actor="ops")
    for version in ("1", "2"):
        path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", version)
        client.register_version("credit", version, path, actor="ops")
    client.set_route("credit", [Split("1", 100)], actor="ops")
    yield client
    client.close()


def _controller(
    registry: RegistryClient, name: str, clock: Callable[[], float] = time.time,
    lease_seconds: float = 10.0,
    notify: Callable[[str, Mapping[str, object]], None] | None = None,
) -> RolloutController:  # fmt: skip
    metrics = RolloutMetrics(CollectorRegistry())
    return RolloutController(registry, name, metrics, tick_seconds=0.05,
                             lease_seconds=lease_seconds, notify=notify, clock=clock)  # fmt: skip


def _start(registry: RegistryClient, clock: Callable[[], float] = time.time) -> None:
    RolloutStore(registry, clock).start(
        None, actor="alice", baseline_from_rule=True, model="credit", candidate="2",
        steps=(50, 100), interval_seconds=60.0, min_requests=10,
    )  # fmt: skip


def test_one_controller_leads_and_hands_the_lease_over_at_stop(registry: RegistryClient) -> None:
    a, b = _controller(registry, "gw-a"), _controller(registry, "gw-b")
    a.tick()
    b.tick()
    assert (a.leading, b.leading) == (True, False)
    a.tick()  # renewing keeps it
    assert a.leading
    a.stop()
    b.tick()
    assert b.leading


def test_a_dead_leaders_lease_is_taken_over_after_its_ttl(registry: RegistryClient) -> None:
    # A TTL far longer than two ticks take on a busy machine: b ticks while a's lease holds.
    a = _controller(registry, "gw-a", lease_seconds=2.0)
    b = _controller(registry, "gw-b", lease_seconds=2.0)
    a.tick()  # a leads, then stops ticking without releasing: it died
    b.tick()
    assert not b.leading
    key = registry.keys.rollout_leader
    assert lease_holder((registry.read_string(key) or b"").decode()) == "gw-a"
    eventually(lambda: registry.read_string(key) is None, timeout=10)  # the TTL ran out
    b.tick()
    assert b.leading


def test_a_leader_that_lost_its_lease_writes_nothing(
    registry: RegistryClient, redis_server: RedisServer
) -> None:
    clock = Clock()
    _start(registry, clock)
    store = RolloutStore(registry)
    a = _controller(registry, "gw-a", clock)
    a.tick()  # leads and snapshots the first interval
    before = store.get("credit")
    assert a.leading and before is not None and before.interval_started_at > 0
    clock.now += 61  # the interval is due...

    def lapse() -> None:  # ...and while it judges, its lease lapses and gw-b takes it
        with redis.Redis.from_url(redis_server.url) as other:
            other.set(registry.keys.rollout_leader, "gw-b")

    clock.on_next_read = lapse
    a.tick()
    assert not a.leading
    assert store.get("credit") == before  # its judgement was not written


def test_an_unreadable_rollout_is_reported_once_and_the_others_go_on(
    registry: RegistryClient, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    by_hand = redis.Redis.from_url(redis_server.url)
    by_hand.set(registry.keys.rollout("ghost"), '{"plan": 7}')
    by_hand.sadd(registry.keys.rollouts, "ghost")
    by_hand.close()
    _start(registry)
    controller = _controller(registry, "gw-a")
    with caplog.at_level(logging.ERROR):
        controller.tick()
        controller.tick()
    unreadable = [r for r in caplog.records if "document is unreadable" in r.getMessage()]
    assert len(unreadable) == 1 and unreadable[0].model == "ghost"  # type: ignore[attr-defined]
    state = RolloutStore(registry).get("credit")
    assert state is not None and state.interval_started_at > 0  # credit was driven


def test_a_manual_rule_change_pauses_and_notifies(registry: RegistryClient) -> None:
    events: list[tuple[str, Mapping[str, object]]] = []
    _start(registry)
    controller = _controller(registry, "gw-a", notify=lambda e, p: events.append((e, p)))
    controller.tick()
    manual = registry.set_route("credit", [Split("1", 100)], actor="bob", reason="not today")
    controller.tick()
    state = RolloutStore(registry).get("credit")
    assert state is not None and state.status == "paused"
    assert registry.get_route("credit") == manual
    assert [event for event, _ in events] == ["paused"]
    payload = events[0][1]
    assert payload["model"] == "credit" and payload["status"] == "paused"
    assert f"changed to revision {manual.revision} by bob (not today)" in str(payload["reason"])
    controller.tick()  # paused: nothing more happens
    assert len(events) == 1


def test_an_interval_without_enough_traffic_waits_and_keeps_counting(
    registry: RegistryClient,
) -> None:
    clock = Clock()
    _start(registry, clock)
    controller = _controller(registry, "gw-a", clock)
    controller.tick()
    store = RolloutStore(registry)
    first = store.get("credit")
    assert first is not None
    clock.now += 61
    controller.tick()
    state = store.get("credit")
    assert state is not None and state.status == "progressing" and state.step == 0
    assert state.last_decision["decision"] == "hold"
    assert str(state.last_decision["reason"]).startswith("waiting for data: requests 0")
    # The next judgement counts from the same start, so a trickle adds up.
    assert state.interval_started_at == first.interval_started_at
    assert state.snapshot == first.snapshot and state.next_check_at == clock.now + 60
    assert state.failures == 0
