"""Quality states: exact under merging, take-backs and their stored format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from registry_client.quality.metrics import metrics_of
from registry_client.quality.state import (
    BinaryState,
    DelayHistogram,
    MulticlassState,
    QualityFormatError,
    QualityState,
    RegressionState,
    StateKey,
    decode_states,
    encode_states,
    new_state,
    state_from_json,
)

ROWS = 1500


def _binary_rows(seed: int) -> list[tuple[float, int, float, float]]:
    rng = np.random.default_rng(seed)
    scores = rng.beta(2.0, 2.0, ROWS)
    labels = (rng.random(ROWS) < scores).astype(int)
    weights = rng.integers(1, 4, ROWS).astype(float)
    delays = rng.lognormal(8.0, 2.0, ROWS)
    return list(
        zip(scores.tolist(), labels.tolist(), weights.tolist(), delays.tolist(), strict=True)
    )


def _binary(rows: list[tuple[float, int, float, float]]) -> BinaryState:
    state = BinaryState()
    for score, label, weight, delay in rows:
        state.add(score, label, weight, 0.5, delay)
    return state


def _multiclass(seed: int) -> MulticlassState:
    rng = np.random.default_rng(seed)
    state = MulticlassState()
    true, predicted = rng.integers(0, 7, ROWS), rng.integers(0, 7, ROWS)
    for t, p, w in zip(true, predicted, rng.integers(1, 3, ROWS), strict=True):
        state.add(int(p), int(t), float(w), 30.0)
    return state


def _regression(seed: int) -> RegressionState:
    rng = np.random.default_rng(seed)
    state = RegressionState()
    for y, p in zip(rng.normal(3.0, 2.0, ROWS), rng.normal(3.0, 2.5, ROWS), strict=True):
        state.add(float(p), float(y), 1.0, 120.0)
    return state


def test_merging_three_parts_equals_one_state_over_all_rows() -> None:
    rows = _binary_rows(1)
    whole = _binary(rows)
    merged = BinaryState()
    for part in (rows[:400], rows[400:1100], rows[1100:]):
        merged.merge(_binary(part))
    # counts and histograms are sums of integer weights: exact in any order
    assert (merged.tp, merged.fp, merged.tn, merged.fn, merged.n) == (
        whole.tp, whole.fp, whole.tn, whole.fn, whole.n,
    )  # fmt: skip
    assert merged.positives == whole.positives
    assert merged.negatives == whole.negatives
    assert merged.delays == whole.delays
    assert merged.sum_label == whole.sum_label
    assert merged.score_sums.keys() == whole.score_sums.keys()
    for key, value in whole.score_sums.items():
        assert merged.score_sums[key] == pytest.approx(value, rel=1e-12)
    assert merged.sum_log_loss == pytest.approx(whole.sum_log_loss, rel=1e-12)
    assert merged.sum_brier == pytest.approx(whole.sum_brier, rel=1e-12)


def test_merging_multiclass_parts_adds_the_confusion_cells() -> None:
    a, b = _multiclass(2), _multiclass(3)
    expected = dict(a.confusion)
    for cell, weight in b.confusion.items():
        expected[cell] = expected.get(cell, 0.0) + weight
    a.merge(b)
    assert a.confusion == expected
    assert a.n == sum(expected.values())
    assert a.delays.buckets == {19: a.n}  # 30 s: 2**(19/4) <= 30 < 2**(20/4)


def test_merging_different_kinds_is_refused() -> None:
    with pytest.raises(TypeError, match="RegressionState"):
        BinaryState().merge(RegressionState())  # type: ignore[arg-type]  # the point of it


def test_encode_decode_round_trip_equals_the_states() -> None:
    states: dict[StateKey, QualityState] = {
        ("v1", "primary", "", ""): _binary(_binary_rows(4)),
        ("v1", "primary", "country", "__other__"): _binary(_binary_rows(5)[:10]),
        ("v2", "shadow", "", ""): _multiclass(6),
        ("v3", "canary", "region", "eu"): _regression(7),
        ("v3", "canary", "region", "us"): RegressionState(),
    }
    payload = encode_states(states)
    assert decode_states(payload) == states
    assert decode_states(payload.encode()) == states
    assert " " not in payload  # compact separators


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_adding_then_taking_back_every_row_leaves_an_empty_state(kind: str) -> None:
    rng = np.random.default_rng(11)
    state, empty = new_state(kind), new_state(kind)
    rows = [(float(rng.random()), int(rng.integers(0, 2)), float(rng.integers(1, 4)),
             float(rng.lognormal(6.0, 2.0))) for _ in range(500)]  # fmt: skip
    for sign in (1.0, -1.0):
        for score, label, weight, delay in rows if sign > 0 else rows[::-1][::2] + rows[::-1][1::2]:
            if isinstance(state, BinaryState):
                state.add(score, label, sign * weight, 0.5, delay)
            elif isinstance(state, MulticlassState):
                state.add(int(score * 5), label, sign * weight, delay)
            else:
                state.add(score * 10.0, float(label), sign * weight, delay)
    assert state.to_json() == empty.to_json()
    assert metrics_of(state) == metrics_of(empty)
    assert state == empty


def test_taking_back_one_row_restores_counts_and_histograms_exactly() -> None:
    state = _binary(_binary_rows(8))
    before = state.to_json()
    state.add(0.73, 1, 2.0, 0.5, 3600.0)
    state.add(0.73, 1, -2.0, 0.5, 3600.0)
    after = state.to_json()
    for key in ("tp", "fp", "tn", "fn", "n", "y", "pos", "neg", "d"):
        assert after[key] == before[key], key
    assert after["ll"] == pytest.approx(before["ll"], rel=1e-12)


def test_a_second_label_replaces_the_first() -> None:
    replaced, direct = BinaryState(), BinaryState()
    replaced.add(0.8, 0, 1.0, 0.5, 60.0)
    replaced.add(0.8, 0, -1.0, 0.5, 60.0)
    replaced.add(0.8, 1, 1.0, 0.5, 600.0)
    direct.add(0.8, 1, 1.0, 0.5, 600.0)
    assert replaced == direct


def test_binary_counts_follow_the_threshold() -> None:
    state = BinaryState()
    for score, label in [(0.3, 1), (0.3, 0), (0.7, 1), (0.7, 0), (0.7, 0)]:
        state.add(score, label, 1.0, 0.3, 0.0)  # 0.3 itself is predicted positive
    assert (state.tp, state.fp, state.tn, state.fn) == (2.0, 3.0, 0.0, 0.0)
    assert state.positives == {600: 1.0, 1400: 1.0}
    assert state.negatives == {600: 1.0, 1400: 2.0}
    assert state.score_sums == {3: 0.6, 7: pytest.approx(2.1)}


def test_scores_outside_the_unit_interval_are_clipped() -> None:
    state = BinaryState()
    state.add(1.5, 1)
    state.add(-0.2, 0)
    assert state.positives == {1999: 1.0}
    assert state.negatives == {0: 1.0}
    assert state.sum_brier == 0.0


@pytest.mark.parametrize("field", ["label", "predicted"])
@pytest.mark.parametrize("index", [64, -1])
def test_a_class_index_outside_the_bound_names_its_field(field: str, index: int) -> None:
    values = {"label": 0, "predicted": 0, field: index}
    with pytest.raises(ValueError, match=f"{field} {index} "):
        MulticlassState().add(values["predicted"], values["label"])


def test_a_binary_label_other_than_0_or_1_is_refused() -> None:
    with pytest.raises(ValueError, match="label 2"):
        BinaryState().add(0.5, 2)


def test_an_unknown_task_is_refused() -> None:
    with pytest.raises(ValueError, match="ranking"):
        new_state("ranking")


def _with(doc: dict[str, object], **changes: object) -> dict[str, object]:
    return {**doc, **changes}


BINARY_DOC = _binary(_binary_rows(9)[:50]).to_json()
MULTICLASS_DOC = _multiclass(10).to_json()


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (_with(BINARY_DOC, tp="3"), "'tp'"),
        (_with(BINARY_DOC, n=True), "'n'"),
        (_with(BINARY_DOC, pos={"-3": 1}), "'pos'"),
        (_with(BINARY_DOC, neg={"2000": 1}), "'neg'"),
        (_with(BINARY_DOC, ss={"x": 1}), "'ss'"),
        (_with(BINARY_DOC, br=None), "'br'"),
        (_with(BINARY_DOC, d={"0": "1"}), "'d'"),
        (_with(BINARY_DOC, d=[1, 2]), "'d'"),
        (_with(BINARY_DOC, k="ranking"), "'k'"),
        (_with(MULTICLASS_DOC, c=[[0, 64, 1]]), "'c'"),
        (_with(MULTICLASS_DOC, c=[[0, 1]]), "'c'"),
        (_with(MULTICLASS_DOC, c={"0": 1}), "'c'"),
        ({"n": 1}, "'k'"),
        ([1, 2], "'k'"),
    ],
)
def test_a_malformed_state_names_its_field(doc: object, field: str) -> None:
    with pytest.raises(QualityFormatError, match=field):
        state_from_json(doc)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ('{"states": []}', "'format'"),
        ('{"format": 1, "states": {}}', "'states'"),
        ('{"format": 1, "states": [["v", "r", "", {"k": "binary"}]]}', "'states'"),
        ('{"format": 1, "states": [["v", "r", 3, "", {"k": "binary"}]]}', "'states'"),
        ('{"format": 1, "states": [["v", "r", "", "", {"k": "binary"}]]}', "'tp'"),
    ],
)
def test_a_malformed_window_names_its_field(payload: str, field: str) -> None:
    with pytest.raises(QualityFormatError, match=field):
        decode_states(payload)


def test_a_window_that_is_not_json_is_a_format_error() -> None:
    with pytest.raises(QualityFormatError, match="not JSON"):
        decode_states("{")


def test_a_repeated_key_is_a_format_error() -> None:
    row = ["v", "r", "", "", RegressionState().to_json()]
    with pytest.raises(QualityFormatError, match="repeats"):
        decode_states(json.dumps({"format": 1, "states": [row, row]}))


def test_delay_quantiles_are_within_a_bucket_of_numpy() -> None:
    delays = np.random.default_rng(12).lognormal(9.0, 1.5, 20_000)
    histogram = DelayHistogram()
    for seconds in delays:
        histogram.add(float(seconds))
    for q in (0.1, 0.5, 0.9, 0.99):
        found = histogram.quantile(q)
        assert found is not None
        # a bucket spans a factor 2**(1/4) = 1.19
        assert found == pytest.approx(float(np.quantile(delays, q)), rel=0.19)


def test_delays_beyond_thirty_days_fall_in_the_last_bucket() -> None:
    histogram = DelayHistogram()
    histogram.add(0.2)
    histogram.add(-5.0)  # clock skew
    histogram.add(86400.0 * 400)
    assert histogram.buckets == {0: 2.0, 86: 1.0}
    assert DelayHistogram().quantile(0.5) is None
