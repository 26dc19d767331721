"""Labels in and the join into the quality state, in a real Redis: joined once across retries
and joiners, replaced without double counting, late and unknown labels counted, shadows
labelled, segments capped consistently, the stream trimmed, a lost lease writing nothing."""

from __future__ import annotations

import math
import time

import pytest
import redis

from registry_client.errors import Rejected
from registry_client.quality.join import JoinResult, LabelJoiner
from registry_client.quality.labels import Label, LabelStore
from registry_client.quality.metrics import Metrics, metrics_of
from registry_client.quality.prediction_store import PredictionStore
from registry_client.quality.predictions import OTHER, PRIMARY, SHADOW, PredictionRecord
from registry_client.quality.state import BinaryState, QualityState, RegressionState, StateKey
from registry_client.quality.store import QualityStore
from registry_client.quality.task import QualityConfig
from registry_client.schema import Keys

KEYS = Keys("t")
MODEL = "credit"
NOW = time.time()  # keys expire at real times
BASE = int(NOW) - 3600  # the predictions' time: an hour ago
CONFIG = QualityConfig("binary", "probabilities", 1, segments=("gender",), max_segment_values=2,
                       label_deadline_seconds=86400.0)  # fmt: skip
TTL = int(CONFIG.label_deadline_seconds) + 86400


class Env:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.predictions = PredictionStore(self.client, KEYS)
        self.labels = LabelStore(self.client, KEYS)
        self.store = QualityStore(self.client, KEYS)

    def joiner(self, writer: str = "gw-1") -> LabelJoiner:
        return LabelJoiner(self.client, KEYS, writer)

    def predict(self, rows: list[tuple[str, int, str, float]], shadow: bool = False) -> None:
        """(id, seconds after BASE, gender, score) each; with a shadow of score 1 - score."""
        entries = []
        for rid, offset, gender, score in rows:
            records = [PredictionRecord("1", PRIMARY, BASE + offset, (gender,), score)]
            if shadow:
                records.append(PredictionRecord("2", SHADOW, BASE + offset, (gender,), 1 - score))
            entries.append((rid, records))
        self.predictions.write(MODEL, entries, TTL)

    def read(self) -> dict[StateKey, QualityState]:
        return self.store.read(MODEL, (BASE - 600) // 60, (BASE + 600) // 60)


@pytest.fixture
def env(redis_server) -> Env:
    return Env(redis_server.url)


def expected(rows: list[tuple[int, str, float, int]], arrival: float = NOW,
             version: str = "1", role: str = PRIMARY) -> dict[StateKey, QualityState]:  # fmt: skip
    """The states of rows (seconds after BASE, gender, score, label) computed directly."""
    states: dict[StateKey, QualityState] = {}
    for offset, gender, score, label in rows:
        for key in ((version, role, "", ""), (version, role, "gender", gender)):
            state = states.setdefault(key, BinaryState())
            assert isinstance(state, BinaryState)
            state.add(score, label, 1.0, threshold=0.5, delay_seconds=arrival - (BASE + offset))
    return states


def assert_same_metrics(found: dict[StateKey, QualityState],
                        wanted: dict[StateKey, QualityState]) -> None:  # fmt: skip
    assert set(found) == set(wanted)
    for key in wanted:
        _assert_close(metrics_of(found[key]), metrics_of(wanted[key]))


def _assert_close(a: Metrics, b: Metrics) -> None:
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        assert (x is None) == (y is None), name
        if x is not None and y is not None:
            assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), name


ROWS = [("a", 0, "F", 0.9), ("b", 10, "M", 0.2), ("c", 70, "F", 0.6), ("d", 75, "M", 0.4)]
LABELS = {"a": 1, "b": 0, "c": 0, "d": 1}


def test_labels_of_known_ids_are_joined_into_metrics_equal_to_a_direct_computation(env):
    env.predict(ROWS)
    env.labels.put(MODEL, [Label(rid, LABELS[rid]) for rid, *_ in ROWS], NOW)
    result = env.joiner().join(MODEL, CONFIG, None, None, NOW)
    assert result == JoinResult(joined=4)
    rows = [(offset, gender, score, LABELS[rid]) for rid, offset, gender, score in ROWS]
    assert_same_metrics(env.read(), expected(rows))
    assert env.store.counts(MODEL) == {"joined": 4}


def test_unknown_ids_are_counted_unmatched(env):
    env.predict(ROWS[:1])
    env.labels.put(MODEL, [Label("a", 1), Label("nobody", 1)], NOW)
    result = env.joiner().join(MODEL, CONFIG, None, None, NOW)
    assert (result.joined, result.unmatched) == (1, {"unknown_id": 1})
    assert env.store.counts(MODEL) == {"joined": 1, "unmatched:unknown_id": 1}


def test_a_label_value_the_task_cannot_use_is_unmatched_invalid(env):
    env.predict(ROWS[:1])
    env.labels.put(MODEL, [Label("a", 2)], NOW)
    assert env.joiner().join(MODEL, CONFIG, None, None, NOW).unmatched == {"invalid": 1}
    assert env.read() == {}


def test_a_second_label_replaces_the_first_without_double_counting(env):
    env.predict(ROWS[:2])
    joiner = env.joiner()
    env.labels.put(MODEL, [Label("a", 0), Label("b", 0)], NOW - 100)
    joiner.join(MODEL, CONFIG, None, None, NOW)
    env.labels.put(MODEL, [Label("a", 1)], NOW)
    result = joiner.join(MODEL, CONFIG, None, None, NOW)
    assert (result.joined, result.replaced) == (1, 1)
    wanted = expected([(0, "F", 0.9, 1)], NOW)
    for key, state in expected([(10, "M", 0.2, 0)], NOW - 100).items():
        wanted.setdefault(key, BinaryState()).merge(state)  # type: ignore[arg-type]
    found = env.read()
    assert_same_metrics(found, wanted)
    for key, state in wanted.items():  # counts and cells exactly (float sums: approximately)
        got = found[key]
        assert isinstance(got, BinaryState) and isinstance(state, BinaryState)
        assert (got.tp, got.fp, got.tn, got.fn, got.n) == (state.tp, state.fp, state.tn,
                                                           state.fn, state.n)  # fmt: skip
        assert (got.positives, got.negatives) == (state.positives, state.negatives)
        assert got.delays.to_json() == state.delays.to_json()


def test_a_label_past_the_deadline_is_counted_late_and_not_joined(env):
    env.predict(ROWS[:1])
    arrival = BASE + CONFIG.label_deadline_seconds + 1
    env.labels.put(MODEL, [Label("a", 1)], arrival)
    result = env.joiner().join(MODEL, CONFIG, None, None, arrival)
    assert (result.late, result.joined) == (1, 0)
    assert env.read() == {}
    assert env.store.counts(MODEL) == {"late": 1}


def test_a_shadow_prediction_gets_the_label_under_role_shadow(env):
    env.predict(ROWS[:1], shadow=True)
    env.labels.put(MODEL, [Label("a", 1)], NOW)
    env.joiner().join(MODEL, CONFIG, None, None, NOW)
    wanted = expected([(0, "F", 0.9, 1)]) | expected([(0, "F", 0.1, 1)], version="2",
                                                     role=SHADOW)  # fmt: skip
    assert_same_metrics(env.read(), wanted)


def test_two_joiners_taking_turns_count_each_label_once(env):
    rows = [(f"id{i}", i * 7, "FM"[i % 2], (i * 37 % 100) / 100) for i in range(40)]
    labels = [Label(rid, i % 3 % 2) for i, (rid, *_) in enumerate(rows)]
    env.predict(rows)
    env.labels.put(MODEL, labels, NOW)
    first, second = env.joiner("gw-1"), env.joiner("gw-2")
    results = []
    for turn in range(4):
        joiner = (first, second)[turn % 2]
        results.append(joiner.join(MODEL, CONFIG, None, None, NOW, batch=10))
    assert [r.remaining for r in results] == [True, True, True, False]
    assert first.join(MODEL, CONFIG, None, None, NOW) == JoinResult()
    merged = env.store.read_merged(MODEL, (BASE - 600) // 60, (BASE + 600) // 60)
    assert merged.writers == {"gw-1", "gw-2"}
    pairs = zip(rows, labels, strict=True)
    wanted = expected([(o, g, s, int(lb.value)) for (_, o, g, s), lb in pairs])
    assert_same_metrics(dict(merged.states), wanted)
    assert env.store.counts(MODEL) == {"joined": 40}


def test_a_joiner_whose_lease_is_lost_writes_nothing(env):
    env.predict(ROWS[:1])
    env.labels.put(MODEL, [Label("a", 1)], NOW)
    env.client.set("{t}:quality-leader", "gw-2:token")
    result = env.joiner().join(MODEL, CONFIG, "{t}:quality-leader", "gw-1:token", NOW)
    assert result == JoinResult(lease_lost=True)
    assert env.read() == {}
    assert env.client.get(KEYS.labels_checkpoint(MODEL)) is None
    assert env.client.xlen(KEYS.labels(MODEL)) == 1
    held = env.joiner().join(MODEL, CONFIG, "{t}:quality-leader", "gw-2:token", NOW)
    assert held.joined == 1


def test_the_stream_is_trimmed_up_to_the_checkpoint(env):
    env.predict(ROWS)
    env.labels.put(MODEL, [Label(rid, LABELS[rid]) for rid, *_ in ROWS], NOW)
    env.joiner().join(MODEL, CONFIG, None, None, NOW, batch=3)
    assert env.client.xlen(KEYS.labels(MODEL)) == 1
    env.joiner().join(MODEL, CONFIG, None, None, NOW, batch=3)
    assert env.client.xlen(KEYS.labels(MODEL)) == 0


def test_segment_values_past_the_limit_become_other_for_every_joiner(env):
    rows = [("a", 0, "F", 0.9), ("b", 1, "M", 0.2), ("c", 2, "X", 0.6), ("d", 3, "Y", 0.4)]
    env.predict(rows)
    env.labels.put(MODEL, [Label(rid, 1) for rid, *_ in rows], NOW)
    env.joiner("gw-1").join(MODEL, CONFIG, None, None, NOW, batch=2)
    env.joiner("gw-2").join(MODEL, CONFIG, None, None, NOW, batch=2)
    dimensions = {k[3] for k in env.read() if k[2] == "gender"}
    assert dimensions == {"F", "M", OTHER}
    other = env.read()[("1", PRIMARY, "gender", OTHER)]
    assert isinstance(other, BinaryState) and other.n == 2
    members = env.client.smembers(KEYS.quality_segments(MODEL, "gender"))
    assert members == {b"F", b"M"}


def test_a_regression_label_is_joined_with_its_value(env):
    config = QualityConfig("regression", "value", None, label_deadline_seconds=86400.0)
    env.predict([("a", 0, "F", 2.5)])
    env.labels.put(MODEL, [Label("a", 3.0, weight=2.0)], NOW)
    env.joiner().join(MODEL, config, None, None, NOW)
    wanted = RegressionState()
    wanted.add(2.5, 3.0, 2.0, delay_seconds=NOW - BASE)
    assert env.read()[("1", PRIMARY, "", "")].to_json() == wanted.to_json()


@pytest.mark.parametrize(("label", "field"), [
    (Label("", 1), "request_id"), (Label("x\n", 1), "request_id"),
    (Label("x" * 129, 1), "request_id"), (Label("x", math.nan), "value"),
    (Label("x", 1, 0.0), "weight"), (Label("x", 1, math.inf), "weight"),
])  # fmt: skip
def test_a_bad_label_is_rejected_naming_its_field_and_nothing_is_appended(env, label, field):
    with pytest.raises(Rejected, match=rf"labels\[1\]\.{field}:"):
        env.labels.put(MODEL, [Label("ok", 1), label], NOW)
    assert env.client.xlen(KEYS.labels(MODEL)) == 0


def test_an_unreadable_field_is_skipped_and_counted_by_the_reader(env):
    env.predict(ROWS[:1])
    env.labels.put(MODEL, [Label("a", 1)], NOW)
    env.joiner().join(MODEL, CONFIG, None, None, NOW)
    env.client.hset(KEYS.quality(MODEL, BASE // 60), "gw-9", "not json")
    merged = env.store.read_merged(MODEL, (BASE - 600) // 60, (BASE + 600) // 60)
    assert (merged.unreadable, merged.writers) == (1, {"gw-1"})
    assert_same_metrics(dict(merged.states), expected([(0, "F", 0.9, 1)]))


def test_a_label_younger_than_the_settling_time_waits_for_its_prediction(env):
    """A label given right after its prediction is joined once the prediction is written,
    not counted unmatched because it came first."""
    env.labels.put(MODEL, [Label("a", 1)], NOW)
    arrived = env.client.xrange(KEYS.labels(MODEL))[0][0].decode()  # the stream's clock
    arrived_at = int(arrived.partition("-")[0]) / 1000
    waiting = env.joiner().join(MODEL, CONFIG, None, None, arrived_at + 1, settle_seconds=5)
    assert waiting == JoinResult()
    env.predict(ROWS[:1])
    joined = env.joiner().join(MODEL, CONFIG, None, None, arrived_at + 5, settle_seconds=5)
    assert joined == JoinResult(joined=1)
