"""Per-version statistics windows: recorded in memory, flushed idempotently, merged by readers."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry, Counter

from gateway.telemetry.flusher import WindowFlusher
from gateway.telemetry.request_stats import RequestStats
from registry_client.client import RegistryClient
from registry_client.stats.store import WindowWrite
from registry_client.stats.window import (
    WINDOW_SECONDS,
    StatsFormatError,
    VersionStats,
    decode_window,
    encode_window,
    merge_into,
    window_of,
)

NOW = 1_800_000_000.0  # a window boundary: 30,000,000 minutes since the epoch


class Clock:
    """A settable clock for RequestStats."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _latencies(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(-7, 0.6, count)


def _flusher(
    stats: RequestStats, client: RegistryClient, replica: str, failures: Counter
) -> WindowFlusher[WindowWrite]:
    def write(writes: list[WindowWrite]) -> None:
        client.stats.write(replica, writes, 600)

    return WindowFlusher("statistics", stats, write, 60, failures)


def test_replicas_merge_into_the_quantiles_of_all_their_requests():
    first, second = VersionStats("1", "primary"), VersionStats("1", "primary")
    a, b = _latencies(1, 20_000), _latencies(2, 30_000) * 1.5  # the second replica is slower
    for value in a:
        first.record("OK", float(value))
    for value in b:
        second.record("OK", float(value))
    first.record("INVALID_ARGUMENT", 0.0)
    second.record("UNAVAILABLE", 0.0)
    second.record("INVALID_ARGUMENT", 0.0)
    merged = VersionStats("1", "primary")
    for replica in (first, second):
        merged.merge(decode_window(encode_window([replica]))[0])  # through the stored format
    assert merged.requests == 50_003
    assert merged.errors == {"INVALID_ARGUMENT": 2, "UNAVAILABLE": 1}
    everything = np.concatenate([a, b])
    for q in (0.5, 0.9, 0.99):
        exact = float(np.quantile(everything, q))
        assert merged.quantile(q) == pytest.approx(exact, rel=0.02), q


def test_comparisons_merge_exactly():
    first, second = VersionStats("2", "shadow"), VersionStats("2", "shadow")
    one = first.comparison("1", "probabilities")
    one.rows, one.agreeing_rows, one.abs_diff_sum, one.elements, one.max_abs_diff = (
        10,
        9,
        2,
        20,
        0.5,
    )
    two = second.comparison("1", "probabilities")
    two.rows, two.agreeing_rows, two.abs_diff_sum, two.elements, two.max_abs_diff = (
        30,
        21,
        6,
        60,
        0.7,
    )
    first.merge(decode_window(encode_window([second]))[0])
    merged = first.comparisons["1", "probabilities"]
    assert (merged.rows, merged.agreeing_rows, merged.elements) == (40, 30, 80)
    assert merged.agreement == 0.75
    assert merged.mean_abs_diff == 0.1
    assert merged.max_abs_diff == 0.7


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[]", b'{"format": 99, "stats": []}', b'{"format": 1}',
     b'{"format": 1, "stats": [{"version": "1"}]}',
     b'{"format": 1, "stats": [{"version": "1", "role": "primary", "requests": 1, "errors": {},'
     b' "latency": "!!", "comparisons": []}]}',
     b'{"format": 1, "stats": [{"revision": "7", "version": "1", "role": "primary",'
     b' "requests": 0, "errors": {}, "latency": "", "comparisons": []}]}'],
)  # fmt: skip
def test_unreadable_windows_are_rejected_with_a_reason(payload):
    with pytest.raises(StatsFormatError):
        decode_window(payload)


def test_a_window_is_written_while_it_changes_then_forgotten():
    clock = Clock()
    stats = RequestStats(clock)
    stats.record("credit", "1", "primary", "OK", 0.001)
    stats.record("credit", "2", "shadow", "INTERNAL", 0.0)
    stats.record("fraud", "1", "primary", "OK", 0.002)
    writes = stats.pending()
    assert {(w.model, w.window) for w in writes} == {("credit", window_of(NOW)),
                                                    ("fraud", window_of(NOW))}  # fmt: skip
    credit = next(w for w in writes if w.model == "credit")
    assert {(s.version, s.role, s.requests) for s in decode_window(credit.payload)} == {
        ("1", "primary", 1), ("2", "shadow", 1)
    }  # fmt: skip
    assert stats.pending() == []  # nothing changed since
    stats.record("credit", "1", "primary", "OK", 0.001)
    (again,) = stats.pending()
    assert {s.requests for s in decode_window(again.payload) if s.version == "1"} == {2}
    clock.now += WINDOW_SECONDS  # the window closes: written once more, then let go
    fraud = next(w for w in writes if w.model == "fraud")
    assert stats.pending() == [again, fraud]  # what a crashed primary lost lands again
    assert stats.pending() == []
    assert stats.windows() == 0


def test_a_failed_write_is_retried_and_a_closed_window_kept_until_written():
    clock = Clock()
    given_up: list[str] = []
    stats = RequestStats(clock, keep_windows=3, on_given_up=lambda: given_up.append("window"))
    stats.record("credit", "1", "primary", "OK", 0.001)
    writes = stats.pending()
    stats.failed(writes)
    clock.now += WINDOW_SECONDS
    assert stats.pending() == writes  # the closed window is written again
    stats.record("credit", "1", "primary", "OK", 0.001)
    stats.failed(stats.pending())
    clock.now += 10 * WINDOW_SECONDS  # Redis stayed away too long: the unwritten one is given up
    assert stats.pending() == []
    assert stats.windows() == 0
    assert given_up == ["window"]  # counted, so drops are exact, not only logged


def test_a_closed_windows_confirming_write_is_retried_and_never_counted_as_given_up():
    clock = Clock()
    given_up: list[str] = []
    stats = RequestStats(clock, keep_windows=3, on_given_up=lambda: given_up.append("window"))
    stats.record("credit", "1", "primary", "OK", 0.001)
    (written,) = stats.pending()
    clock.now += WINDOW_SECONDS
    confirming = stats.pending()
    assert confirming == [written]
    stats.failed(confirming)  # the primary that acknowledged it crashed: no one answers
    assert stats.pending() == [written]  # written again to whoever answers now
    assert stats.pending() == []
    stats.record("credit", "1", "primary", "OK", 0.001)
    assert len(stats.pending()) == 1  # the next window, written
    clock.now += WINDOW_SECONDS
    stats.failed(stats.pending())  # its confirming write fails, and Redis stays away
    clock.now += 10 * WINDOW_SECONDS
    assert stats.pending() == [] and stats.windows() == 0
    assert given_up == []  # its change was acknowledged once: not a window given up


def test_flushes_are_idempotent_and_replicas_add_up(redis_server):
    client = RegistryClient.from_url(redis_server.url)
    failures = Counter("failures", "", ["what"], registry=CollectorRegistry())
    replicas = []
    for name, requests in (("replica-a", 3), ("replica-b", 4)):
        stats = RequestStats()
        for _ in range(requests):
            stats.record("credit", "1", "primary", "OK", 0.001)
        stats.record("credit", "1", "primary", "NOT_FOUND", 0.0)
        replicas.append((stats, _flusher(stats, client, name, failures)))
    for _, flusher in replicas:
        assert flusher.flush()
    first_stats, first_flusher = replicas[0]
    first_stats.failed(first_stats.pending())  # as if the write had failed: written again
    assert first_flusher.flush()
    merged = client.stats.read("credit", 900)
    (primary,) = merged.by_version.values()
    assert primary.requests == 9
    assert primary.errors == {"NOT_FOUND": 2}
    assert merged.replicas == {"replica-a", "replica-b"}
    raw = redis.Redis.from_url(redis_server.url)
    assert 0 < raw.ttl(client.keys.stats("credit", window_of(time.time()))) <= 600
    raw.close()
    client.close()


def test_a_replica_whose_window_is_unreadable_is_skipped_and_counted(redis_server):
    client = RegistryClient.from_url(redis_server.url)
    stats = RequestStats()
    stats.record("credit", "1", "primary", "OK", 0.001)
    client.stats.write("good", stats.pending(), 600)
    raw = redis.Redis.from_url(redis_server.url)
    raw.hset(client.keys.stats("credit", window_of(time.time())), "newer-gateway",
             '{"format": 2, "stats": []}')  # fmt: skip
    merged = client.stats.read("credit", 900)
    assert merged.unreadable == 1
    assert sum(s.requests for s in merged.by_version.values()) == 1
    raw.close()
    client.close()


def test_an_unreachable_redis_is_retried_until_it_answers(redis_server):
    client = RegistryClient.from_url(redis_server.url)
    registry = CollectorRegistry()
    failures = Counter("failures", "", ["what"], registry=registry)
    stats = RequestStats()
    flusher = _flusher(stats, client, "replica-a", failures)
    stats.record("credit", "1", "primary", "OK", 0.001)
    redis_server.stop()
    assert not flusher.flush()
    assert registry.get_sample_value("failures_total", {"what": "statistics"}) == 1
    redis_server.start()
    assert flusher.flush()
    assert client.stats.read("credit", 900).by_version["1", "primary"].requests == 1
    client.close()


def test_each_rule_revision_is_counted_apart_and_readers_of_versions_add_them_up():
    stats = RequestStats(Clock())
    for revision, count in ((6, 3), (7, 2)):
        for _ in range(count):
            stats.record("credit", "1", "primary", "OK", 0.001, revision)
    stats.record("credit", "1", "primary", "INTERNAL", 0.0, 7)
    stats.record_comparison("credit", "1", "2", "probabilities", rows=4, agreeing_rows=3,
                            abs_diff_sum=0.5, elements=8, max_abs_diff=0.2, revision=7)  # fmt: skip
    (write,) = stats.pending()
    entries = decode_window(write.payload)
    assert {(s.version, s.role, s.revision, s.requests) for s in entries} == {
        ("1", "primary", 6, 3), ("1", "primary", 7, 3), ("2", "shadow", 7, 0)}  # fmt: skip
    # A reader that keys by (version, role) only, as readers before revisions did, adds the
    # revisions up: the format did not change under it.
    merged: dict[tuple[str, str], VersionStats] = {}
    merge_into(merged, entries)
    assert merged["1", "primary"].requests == 6 and merged["1", "primary"].revision is None
    assert merged["1", "primary"].errors == {"INTERNAL": 1}


def test_a_window_written_before_revisions_were_kept_reads_as_revision_unknown():
    old = VersionStats("1", "primary")
    old.record("OK", 0.001)
    payload = json.loads(encode_window([old]))
    assert "revision" not in payload["stats"][0]  # as older gateways wrote it
    (read,) = decode_window(json.dumps(payload))
    assert (read.revision, read.requests) == (None, 1)


def test_the_store_merges_every_replica_per_revision(redis_server):
    client = RegistryClient.from_url(redis_server.url)
    window = window_of(time.time())
    for replica, revisions in (("a", (6, 7)), ("b", (7, None))):
        entries = []
        for revision in revisions:
            entry = VersionStats("1", "primary", revision=revision)
            entry.record("OK", 0.001)
            entries.append(entry)
        client.stats.write(replica, [WindowWrite("credit", window, encode_window(entries))], 600)
    merged = client.stats.read("credit", 900)
    assert {key: s.requests for key, s in merged.by_revision.items()} == {
        ("1", "primary", 6): 1, ("1", "primary", 7): 2, ("1", "primary", None): 1}  # fmt: skip
    assert merged.by_version["1", "primary"].requests == 4
    assert merged.requests_by_window["1", "primary", 7] == {window: 2}
    client.close()
