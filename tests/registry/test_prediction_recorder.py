"""The prediction recorder: queued on the request path, folded and held in the background,
written to a real Redis, and every prediction not logged counted once by reason."""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry, Counter

from gateway._proto import grpc_service_pb2 as pb
from gateway.quality.recorder import PredictionRecorder
from registry_client.quality.prediction_store import PredictionStore
from registry_client.quality.predictions import PRIMARY, SHADOW, PredictionRecord
from registry_client.quality.task import QualityConfig
from registry_client.schema import Keys

BINARY = QualityConfig("binary", "probabilities", 1, segments=("gender", "age_band"))
MULTICLASS = QualityConfig("multiclass", "probabilities", None)
REGRESSION = QualityConfig("regression", "value", 0)
TTL = 7 * 86_400
F32_08, F32_01 = float(np.float32(0.8)), float(np.float32(0.1))  # as the model answers them


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))  # whole seconds: records keep seconds

    def __call__(self) -> float:
        return self.now


class Recorded:
    """A recorder over a settable clock, with its counters."""

    def __init__(self, buffer: int = 1000, per_second: float = 1000.0) -> None:
        registry = CollectorRegistry()
        self.dropped = Counter("dropped", "", ["model", "reason"], registry=registry)
        self.unknown = Counter("unknown", "", ["model"], registry=registry)
        self.clock = Clock()
        self.recorder = PredictionRecorder(self.dropped, self.unknown, buffer, per_second,
                                           hold_seconds=2.0, keep_seconds=60.0,
                                           clock=self.clock)  # fmt: skip

    def drops(self, model: str, reason: str) -> float:
        return float(self.dropped.labels(model, reason)._value.get())

    def written(self) -> dict[str, list[PredictionRecord]]:
        """What pending() hands over once the hold has passed, by id."""
        self.clock.now += 2.0
        return {key: list(records) for write in self.recorder.pending()
                for key, records in write.entries}  # fmt: skip


def parameters(**segments: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest()
    for name, value in segments.items():
        request.parameters[f"segment.{name}"].string_param = value
    return request


def test_binary_scores_are_the_positive_column_with_segments_and_row_ids():
    rec = Recorded()
    rec.recorder.set_config("credit", BINARY)
    request = parameters(gender="F", region="eu")
    scores = np.array([[0.2, 0.8], [0.9, 0.1]], np.float32)
    rec.recorder.observe("credit", "1", PRIMARY, "r1", request.parameters,
                         (("x-segment-age_band", "18-25"),), scores)  # fmt: skip
    now = int(rec.clock.now)
    assert rec.written() == {
        "r1:0": [PredictionRecord("1", PRIMARY, now, ("F", "18-25"), F32_08)],
        "r1:1": [PredictionRecord("1", PRIMARY, now, ("F", "18-25"), F32_01)],
    }
    assert rec.unknown.labels("credit")._value.get() == 1  # region


def test_multiclass_logs_the_predicted_class_and_regression_the_value():
    rec = Recorded()
    rec.recorder.set_config("digits", MULTICLASS)
    rec.recorder.set_config("price", REGRESSION)
    empty = pb.ModelInferRequest().parameters
    rec.recorder.observe("digits", "1", PRIMARY, "d", empty, (), np.array([[0.1, 0.7, 0.2]]))
    rec.recorder.observe("price", "1", PRIMARY, "p", empty, (), np.array([[41.5]]))
    written = rec.written()
    assert [r.score for r in written["d"]] == [1.0]
    assert [r.score for r in written["p"]] == [41.5]


def test_a_shadow_is_written_with_its_primary_and_never_alone():
    rec = Recorded()
    rec.recorder.set_config("credit", BINARY)
    empty = pb.ModelInferRequest().parameters
    rec.recorder.observe("credit", "1", PRIMARY, "a", empty, (), np.array([[0.3, 0.7]]))
    rec.recorder.observe("credit", "2", SHADOW, "a", empty, (), np.array([[0.6, 0.4]]))
    written = rec.written()
    assert [(r.version, r.role) for r in written["a"]] == [("1", PRIMARY), ("2", SHADOW)]
    rec.recorder.observe("credit", "3", SHADOW, "a", empty, (), np.array([[0.5, 0.5]]))
    assert rec.written() == {}  # its primary's field is written: not replaced by it alone
    assert rec.drops("credit", "shadow_late") == 1


def test_drops_are_counted_exactly_by_reason():
    rec = Recorded(buffer=4, per_second=3)
    rec.recorder.set_config("credit", BINARY)
    empty = pb.ModelInferRequest().parameters
    two = np.array([[0.1, 0.9], [0.2, 0.8]])
    for i in range(4):  # r0 to r2 are let through the cap of 3 a second; r3 is not
        rec.recorder.observe("credit", "1", PRIMARY, f"r{i}", empty, (), two)
    written = rec.written()
    assert sorted(written) == ["r0:0", "r0:1", "r1:0"]  # 3 rows a second: r1's second over
    assert rec.drops("credit", "rate") == 2 + 1 + 2  # r3's rows, r1:1, r2's rows
    rec.recorder.observe("credit", "1", PRIMARY, "x" * 129, empty, (), two[:1])
    rec.recorder.observe("credit", "1", PRIMARY, "nan", empty, (), np.array([[0.5, np.nan]]))
    assert rec.written() == {}
    assert rec.drops("credit", "id") == 1
    assert rec.drops("credit", "score") == 1
    small = Recorded(buffer=2, per_second=10)
    small.recorder.set_config("credit", BINARY)
    for i in range(3):
        small.recorder.observe("credit", "1", PRIMARY, f"r{i}", empty, (), two)
    assert small.drops("credit", "buffer") == 2  # r2's two rows: the queue held two requests
    assert sorted(small.written()) == ["r0:0", "r0:1"]  # and two ids are held at most
    assert small.drops("credit", "buffer") == 2 + 2


def test_requests_over_the_cap_are_counted_without_taking_the_buffer():
    rec = Recorded(buffer=3, per_second=2)
    rec.recorder.set_config("credit", BINARY)
    empty = pb.ModelInferRequest().parameters
    for i in range(50):
        rec.recorder.observe("credit", "1", PRIMARY, f"r{i}", empty, (), np.array([[0.1, 0.9]]))
    rec.recorder.observe("credit", "2", SHADOW, "r7", empty, (), np.array([[0.2, 0.8]]))
    assert sorted(rec.written()) == ["r0", "r1"]
    assert rec.drops("credit", "rate") == 48
    assert rec.drops("credit", "buffer") == 0
    assert rec.drops("credit", "shadow_late") == 1  # its primary was not logged


def test_models_without_a_config_are_not_logged():
    rec = Recorded()
    assert rec.recorder.score_output("credit") is None
    rec.recorder.set_config("credit", BINARY)
    assert rec.recorder.score_output("credit") == "probabilities"
    rec.recorder.set_config("credit", None)
    rec.recorder.observe("credit", "1", PRIMARY, "a", pb.ModelInferRequest().parameters, (),
                         np.array([[0.1, 0.9]]))  # fmt: skip
    assert rec.written() == {}


def test_a_failed_write_is_held_again_and_given_up_after_keep_seconds(redis_server):
    rec = Recorded()
    rec.recorder.set_config("credit", BINARY)
    empty = pb.ModelInferRequest().parameters
    rec.recorder.observe("credit", "1", PRIMARY, "a", empty, (), np.array([[0.1, 0.9]]))
    rec.clock.now += 2.0
    writes = rec.recorder.pending()
    rec.recorder.failed(writes)  # Redis was away
    store = PredictionStore(redis.Redis.from_url(redis_server.url), Keys("t"))
    for write in rec.recorder.pending():
        store.write(write.model, write.entries, TTL)
    found = store.lookup("credit", ["a"], TTL, now=rec.clock.now)
    assert [r.score for r in found["a"]] == [pytest.approx(0.9)]
    rec.recorder.observe("credit", "1", PRIMARY, "b", empty, (), np.array([[0.1, 0.9]]))
    rec.clock.now += 61.0
    rec.recorder.failed(rec.recorder.pending())
    assert rec.recorder.held() == 0
    assert rec.drops("credit", "redis") == 1


def test_a_retried_write_goes_out_next_time_ahead_of_ids_still_held():
    rec = Recorded()
    rec.recorder.set_config("credit", BINARY)
    empty = pb.ModelInferRequest().parameters
    rec.recorder.observe("credit", "1", PRIMARY, "a", empty, (), np.array([[0.1, 0.9]]))
    rec.clock.now += 2.0
    writes = rec.recorder.pending()
    rec.recorder.observe("credit", "1", PRIMARY, "b", empty, (), np.array([[0.1, 0.8]]))
    rec.recorder.failed(writes)  # Redis was away; "b" has yet to be held its two seconds
    retried = rec.recorder.pending()
    assert [key for write in retried for key, _ in write.entries] == ["a"]
    assert rec.recorder.held() == 1
    assert list(rec.written()) == ["b"]


def test_an_outage_holds_no_more_ids_than_the_buffer_and_counts_the_rest():
    rec = Recorded(buffer=4)
    rec.recorder.set_config("credit", BINARY)
    empty = pb.ModelInferRequest().parameters
    for name in "abc":
        rec.recorder.observe("credit", "1", PRIMARY, name, empty, (), np.array([[0.1, 0.9]]))
    rec.clock.now += 2.0
    rec.recorder.failed(rec.recorder.pending())  # Redis away: three held again
    for name in "defgh":
        rec.recorder.observe("credit", "1", PRIMARY, name, empty, (), np.array([[0.1, 0.9]]))
    rec.recorder.fold()
    assert rec.recorder.held() == 4
    assert rec.drops("credit", "buffer") == 4  # e to h found the held ids full
