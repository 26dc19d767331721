"""Quality events across leader failover, in a real Redis with two real rollout controllers
ticking side by side: only the leader judges, a window is judged once whoever leads, a streak
or an open episode is carried over to the next leader, and nothing is sent twice; and under
the controller's Redis ACL user."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from gateway.rollout.quality_events import QualityEvents
from registry_client.client import RegistryClient
from registry_client.quality.episode_store import EpisodeStore
from registry_client.quality.episodes import Episode, Subject
from tests.support.quality_events import (
    LIMITS,
    MODEL,
    PRIMARY,
    SHADOW,
    World,
    bad,
    good,
    window_end,
)
from tests.support.redis_server import CONTROLLER_ACL, RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def world(redis_server: RedisServer, tmp_path: Path) -> Iterator[World]:
    made = World(redis_server.url, tmp_path)
    made.evaluate("1", 0.95)
    yield made
    made.close()


def test_an_episode_open_when_the_leader_stops_is_not_sent_again_by_the_next(world):
    a, b = world.controller("gw-a"), world.controller("gw-b")
    for k, scores in enumerate([good, bad, bad]):  # the episode opens with window 2
        world.predict(k, {PRIMARY: scores, SHADOW: good})
        world.judge(k, a, b)
    assert (a.leading, b.leading) == (True, False)
    a.stop()  # hands the lease over mid-episode, in the middle of window 3
    world.judge(2, b)  # b takes over while window 2 (judged by a) is still the last one
    assert b.leading
    for k, scores in enumerate([bad, bad, good, good], start=3):
        world.predict(k, {PRIMARY: scores, SHADOW: good})
        world.judge(k, b)
    events = world.received()
    assert [(e["event"], e["replica"]) for e in events] == [
        ("accuracy.drop", "gw-a"),
        ("accuracy.resolved", "gw-b"),
    ]
    assert events[0]["episode"] == events[1]["episode"]
    audited = [e for e in world.client.history(MODEL) if e["action"].startswith("event.")]
    assert len(audited) == 2


def test_a_streak_begun_under_one_leader_is_finished_by_the_next(world):
    a, b = world.controller("gw-a"), world.controller("gw-b")
    world.predict(0, {PRIMARY: bad, SHADOW: good})
    world.judge(0, a, b)  # one bad window of the two an episode needs
    a.stop()
    world.predict(1, {PRIMARY: bad, SHADOW: good})
    world.judge(1, b)  # b leads now: the second one in a row
    (drop,) = world.received()
    assert (drop["event"], drop["replica"]) == ("accuracy.drop", "gw-b")
    assert drop["window_end"] == drop["started_at"]


def test_a_window_is_judged_once_however_often_the_leaders_tick(world):
    a, b = world.controller("gw-a"), world.controller("gw-b")
    world.predict(0, {PRIMARY: bad, SHADOW: good})
    world.judge(0, a, b)
    a.stop()
    world.judge(0, b)  # b leads during the same window: the streak must stay at one
    episodes = _episodes(world)
    assert episodes[Subject("accuracy", "1", "primary")] == Episode(streak=1)


def test_a_judge_without_the_lease_writes_nothing(world, redis_server: RedisServer):
    with redis.Redis.from_url(redis_server.url) as other:
        other.set(world.client.keys.rollout_leader, "gw-b|theirs")
    events = QualityEvents(world.client, "gw-a", LIMITS, lambda event, payload: None)
    world.predict(0, {PRIMARY: bad, SHADOW: good})
    world.predict(1, {PRIMARY: bad, SHADOW: good})
    for k in range(2):
        events.tick(window_end(k) + 1, "gw-a|ours")
    assert _episodes(world) == {}
    assert not [e for e in world.client.history(MODEL) if e["action"].startswith("event.")]
    events.tick(window_end(1) + 2, "gw-b|theirs")  # with the lease's value it judges
    assert _episodes(world)[Subject("accuracy", "1", "primary")] == Episode(streak=1)


def _episodes(world: World) -> dict[Subject, Episode]:
    return EpisodeStore(world.client).episodes(MODEL)


def _user(redis_server: RedisServer, acl: str) -> RegistryClient:
    with redis.Redis.from_url(redis_server.url) as admin:
        admin.execute_command("ACL", "SETUSER", "controller", *acl.split())
    return RegistryClient.from_url(
        redis_server.url.replace("redis://", "redis://controller:gateway-secret@")
    )


def test_the_controllers_redis_user_may_judge_quality_events(world, redis_server):
    world.reference("1")
    client = _user(redis_server, CONTROLLER_ACL)
    try:
        gateway = world.controller("gw-a", client=client)
        for k in range(2):
            world.predict(k, {PRIMARY: bad, SHADOW: good})
            world.sketch(k, "1", 1.0)
            world.judge(k, gateway)
        assert sorted(e["event"] for e in world.received()) == ["accuracy.drop", "drift.alert"]
    finally:
        client.close()


def test_a_redis_user_without_the_rights_is_told_once_and_the_controller_leads_on(
    world, redis_server, caplog
):
    client = _user(redis_server, CONTROLLER_ACL.replace(" %RW~{onnxgate}:quality-events:*", ""))
    try:
        gateway = world.controller("gw-a", client=client)
        with caplog.at_level(logging.ERROR):
            for k in range(3):
                world.predict(k, {PRIMARY: bad, SHADOW: good})
                world.judge(k, gateway)
        assert gateway.leading
        refused = [r for r in caplog.records if "quality events skipped" in r.getMessage()]
        assert len(refused) == 1 and "no permissions" in refused[0].reason
        assert world.received() == []
    finally:
        client.close()
