"""The prediction log in a real Redis: written by id, found by id alone across the days it
keeps, idempotent to retry, compact (listpack hashes), and expiring by day."""

from __future__ import annotations

import time

import redis

from registry_client.quality.prediction_store import PredictionStore
from registry_client.quality.predictions import (
    DAY_SECONDS,
    MIN_BUCKETS,
    PRIMARY,
    SHADOW,
    PredictionRecord,
    day_of,
)
from registry_client.schema import Keys

# Today's UTC midnight: the keys expire at real times, after their day.
TODAY = day_of(time.time()) * DAY_SECONDS
TTL = 7 * DAY_SECONDS
KEYS = Keys("t")


def store_of(redis_server) -> tuple[PredictionStore, redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    return PredictionStore(client, KEYS), client


def record(version: str, when: int, score: float, role: str = PRIMARY) -> PredictionRecord:
    return PredictionRecord(version, role, when, ("F", "18-25"), score)


def test_predictions_are_found_by_id_with_their_shadows(redis_server):
    store, _ = store_of(redis_server)
    store.write("credit", [
        ("a", [record("1", TODAY + 10, 0.9), record("2", TODAY + 10, 0.2, SHADOW)]),
        ("b", [record("1", TODAY + 20, 0.1)]),
    ], TTL)  # fmt: skip
    found = store.lookup("credit", ["a", "b", "absent"], TTL, now=TODAY + 3600)
    assert found == {
        "a": [record("1", TODAY + 10, 0.9), record("2", TODAY + 10, 0.2, SHADOW)],
        "b": [record("1", TODAY + 20, 0.1)],
    }


def test_a_label_finds_a_prediction_made_days_earlier_but_not_past_the_ttl(redis_server):
    store, _ = store_of(redis_server)
    store.write("credit", [("old", [record("1", TODAY - 6 * DAY_SECONDS, 0.7)])], TTL)
    store.write("credit", [("older", [record("1", TODAY - 9 * DAY_SECONDS, 0.7)])], TTL)
    found = store.lookup("credit", ["old", "older"], TTL, now=TODAY + 60)
    assert list(found) == ["old"]


def test_a_retried_write_replaces_rather_than_duplicates(redis_server):
    store, client = store_of(redis_server)
    entries = [("a", [record("1", TODAY + 10, 0.9)])]
    store.write("credit", entries, TTL)
    store.write("credit", entries, TTL)
    assert store.lookup("credit", ["a"], TTL, now=TODAY + 60) == {"a": entries[0][1]}
    buckets = int(client.get(KEYS.prediction_buckets("credit", day_of(TODAY))) or 0)
    keys = [KEYS.predictions("credit", day_of(TODAY), b) for b in range(buckets)]
    assert sum(client.hlen(k) for k in keys) == 1
    minute = (TODAY + 10) // 60
    assert store.logged("credit", minute, minute) == {("1", PRIMARY): 1}  # counted once
    assert int(client.get(KEYS.prediction_count("credit", day_of(TODAY))) or 0) == 1


def test_a_retry_with_a_shadow_folded_since_counts_only_the_shadow(redis_server):
    store, client = store_of(redis_server)
    primary = record("1", TODAY + 10, 0.9)
    store.write("credit", [("a", [primary]), ("b", [record("1", TODAY + 12, 0.4)])], TTL)
    # The answer was lost; the retry has a's shadow too, and c, new.
    shadow = record("2", TODAY + 10, 0.8, SHADOW)
    store.write("credit", [("a", [primary, shadow]), ("c", [record("1", TODAY + 70, 0.3)])],
                TTL)  # fmt: skip
    minute = (TODAY + 10) // 60
    assert store.logged("credit", minute, minute + 1) == {("1", PRIMARY): 3, ("2", SHADOW): 1}
    assert int(client.get(KEYS.prediction_count("credit", day_of(TODAY))) or 0) == 3
    assert store.lookup("credit", ["a"], TTL, now=TODAY + 60) == {"a": [primary, shadow]}


def test_the_days_bucket_count_comes_from_the_day_before_and_every_writer_agrees(redis_server):
    first, client = store_of(redis_server)
    yesterday = day_of(TODAY) - 1
    client.set(KEYS.prediction_count("credit", yesterday), 80_000)
    first.write("credit", [("a", [record("1", TODAY + 10, 0.9)])], TTL)
    second = PredictionStore(redis.Redis.from_url(redis_server.url), KEYS)
    second.write("credit", [("b", [record("1", TODAY + 11, 0.9)])], TTL)
    assert int(client.get(KEYS.prediction_buckets("credit", day_of(TODAY))) or 0) == 1_000
    assert int(client.get(KEYS.prediction_count("credit", day_of(TODAY))) or 0) == 2
    assert set(first.lookup("credit", ["a", "b"], TTL, now=TODAY + 60)) == {"a", "b"}
    assert int(client.get(KEYS.prediction_buckets("credit", yesterday)) or MIN_BUCKETS) == 16


def test_every_key_of_a_day_expires_when_the_ttl_after_that_day_ends(redis_server):
    store, client = store_of(redis_server)
    store.write("credit", [("a", [record("1", TODAY + 10, 0.9)])], TTL)
    day = day_of(TODAY)
    ends = (day + 1) * DAY_SECONDS + TTL
    names = [k.decode() if isinstance(k, bytes) else k for k in client.keys("{t:credit}:pred:*")]
    assert len(names) == 4  # one bucket, the bucket count, the day's count, the minute's
    for name in names:
        expected = ends + DAY_SECONDS if name.endswith(":count") else ends
        assert client.expiretime(name) == expected, name


def test_predictions_logged_are_counted_per_minute_version_and_role(redis_server):
    store, _ = store_of(redis_server)
    minute = TODAY // 60
    store.write("credit", [("a", [record("1", TODAY + 10, 0.9)]),
                           ("b", [record("1", TODAY + 70, 0.2)])], TTL)  # fmt: skip
    store.write("credit", [("c", [record("2", TODAY + 20, 0.4)])], TTL)
    assert store.logged("credit", minute, minute) == {("1", "primary"): 1, ("2", "primary"): 1}
    assert store.logged("credit", minute, minute + 1) == {("1", "primary"): 2,
                                                          ("2", "primary"): 1}  # fmt: skip
    assert store.logged("credit", minute + 2, minute + 5) == {}


def test_a_stored_prediction_costs_under_100_bytes(redis_server):
    """Redis' own accounting (used_memory) over 20,000 predictions with 32-character ids,
    two segments and a shadow on none: the figure docs/quality.md quotes."""
    store, client = store_of(redis_server)
    count = 20_000
    client.set(KEYS.prediction_count("credit", day_of(TODAY) - 1), count)  # sized for it
    before = client.info("memory")["used_memory"]
    entries = [(f"{i:032x}", [record("12", TODAY + i % DAY_SECONDS, (i % 997) / 997)])
               for i in range(count)]  # fmt: skip
    for start in range(0, count, 1000):
        store.write("credit", entries[start : start + 1000], TTL)
    per_prediction = (client.info("memory")["used_memory"] - before) / count
    assert per_prediction < 100, per_prediction
    assert client.object("encoding", KEYS.predictions("credit", day_of(TODAY), 0)) == b"listpack"
