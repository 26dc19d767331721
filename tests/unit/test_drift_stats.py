"""Drift statistics from sketches agree with exact numpy/scipy computations on known shifts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from registry_client.drift.reference import FeatureReference
from registry_client.drift.sketch import (
    TRANSPORT_LEVELS,
    FeatureSketch,
    SketchFormatError,
    decode_sketches,
    encode_sketches,
    merge_sketches,
)
from registry_client.drift.statistics import Thresholds, dataset_drift, feature_drift

RNG = np.random.default_rng(42)
TRAINING = RNG.normal(5.0, 2.0, 50_000)


def _reference(values: np.ndarray) -> FeatureReference:
    reference = FeatureReference.from_values(values)
    assert reference is not None
    return reference


REFERENCE = _reference(TRAINING)


def _sketch(values: np.ndarray, exact_bins: bool = True) -> FeatureSketch:
    sketch = FeatureSketch()
    for chunk in np.array_split(values, 7):  # folded in pieces, as the gateway does
        sketch.update(chunk, REFERENCE.bins if exact_bins else None)
    return sketch


def _exact_psi(current: np.ndarray) -> float:
    edges = np.quantile(TRAINING, [0.1 * i for i in range(1, 10)])
    finite = current[np.isfinite(current)]
    ours = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=10) / finite.size
    theirs = (
        np.bincount(np.searchsorted(edges, TRAINING, side="right"), minlength=10) / TRAINING.size
    )
    ours, theirs = np.maximum(ours, 1e-4), np.maximum(theirs, 1e-4)
    return float(np.sum((ours - theirs) * np.log(ours / theirs)))


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5])
def test_shifted_inputs_match_exact_statistics(shift):
    current = RNG.normal(5.0 + shift * 2.0, 2.0, 20_000)
    drift = feature_drift("x", _sketch(current), REFERENCE)
    assert drift.exact_bins
    assert drift.psi == pytest.approx(_exact_psi(current), abs=1e-9)
    assert drift.ks == pytest.approx(stats.ks_2samp(current, TRAINING).statistic, abs=0.03)
    exact_w = stats.wasserstein_distance(current, TRAINING) / TRAINING.std()
    # Only the current window's sketch errs (the reference holds exact quantiles): over 18,000
    # sketches of such data, at shifts 0, 0.1 and 0.5, it was off by at most 0.041 (99.9th
    # percentile 0.033); with both sides sketched, by up to 0.07.
    assert drift.wasserstein == pytest.approx(exact_w, abs=0.05)
    assert drift.missing_increase == 0
    exact_out = np.mean((current < TRAINING.min()) | (current > TRAINING.max()))
    assert drift.out_of_range == pytest.approx(exact_out, abs=1e-12)
    assert drift.verdict == {0.0: "ok", 0.1: "ok", 0.5: "alert"}[shift]


def test_without_the_reference_bins_psi_comes_from_the_sketch_within_its_error():
    current = RNG.normal(6.0, 2.0, 20_000)
    drift = feature_drift("x", _sketch(current, exact_bins=False), REFERENCE)
    assert not drift.exact_bins
    # KLL compacts at random, from a process-wide state (so the tests run before change it):
    # over 300 sketches of such data the PSI was off by at most 0.022 (99th percentile 0.018).
    assert drift.psi == pytest.approx(_exact_psi(current), abs=0.035)
    assert drift.verdict == "alert"


def test_a_nan_burst_is_a_missing_rate_alert():
    current = RNG.normal(5.0, 2.0, 10_000)
    current[:800] = np.nan
    current[800:900] = np.inf  # infinities count as missing too
    drift = feature_drift("x", _sketch(current), REFERENCE)
    assert drift.missing_increase == pytest.approx(0.09)
    assert drift.verdict == "alert"
    assert drift.psi == pytest.approx(_exact_psi(current), abs=1e-9)


def test_a_range_excursion_is_counted_exactly():
    current = RNG.normal(5.0, 2.0, 10_000)
    current[:500] = 1e6  # 5% far above anything seen in training
    drift = feature_drift("x", _sketch(current), REFERENCE)
    assert drift.out_of_range == pytest.approx(0.05, abs=1e-4)  # a warning on its own
    assert drift.verdict == "alert"  # the Wasserstein distance of 5% at 1e6 alerts


def test_no_verdict_under_a_thousand_values():
    drift = feature_drift("x", _sketch(RNG.normal(50.0, 2.0, 999)), REFERENCE)
    assert drift.verdict == "insufficient"
    assert drift.ks is not None and drift.ks > 0.9  # the figures are still shown


def test_dataset_drifts_when_half_the_features_do():
    steady = feature_drift("a", _sketch(RNG.normal(5.0, 2.0, 5_000)), REFERENCE)
    moved = feature_drift("b", _sketch(RNG.normal(7.0, 2.0, 5_000)), REFERENCE)
    assert dataset_drift([steady, moved]) == "alert"
    assert dataset_drift([steady, steady, moved]) == "ok"
    assert dataset_drift([]) == "insufficient"


def test_thresholds_are_configurable():
    current = RNG.normal(5.4, 2.0, 20_000)  # 0.2 sigma
    assert feature_drift("x", _sketch(current), REFERENCE).verdict in ("ok", "warn")
    strict = Thresholds(psi=(0.001, 0.002), ks=(0.01, 0.02), wasserstein=(0.01, 0.02))
    assert feature_drift("x", _sketch(current), REFERENCE, strict).verdict == "alert"


def test_replica_sketches_merge_into_the_sketch_of_all_their_data():
    parts = [RNG.normal(5.0, 2.0, n) for n in (3_000, 7_000, 11_000)]
    parts[1][:50] = np.nan
    merged: dict[str, FeatureSketch] = {}
    for part in parts:  # through the stored format, as replicas write it
        _, decoded = decode_sketches(encode_sketches(part.size, {"x": _sketch(part)}))
        merge_sketches(merged, decoded.items())
    whole = _sketch(np.concatenate(parts))
    one = merged["x"]
    assert (one.count, one.missing, one.below, one.above) == (
        whole.count, whole.missing, whole.below, whole.above)  # fmt: skip
    assert one.histogram is not None and whole.histogram is not None
    assert one.histogram.tolist() == whole.histogram.tolist()
    assert (one.minimum, one.maximum) == (whole.minimum, whole.maximum)
    assert one.total == pytest.approx(whole.total)
    everything = np.concatenate(parts)
    for q in (0.01, 0.5, 0.99):
        rank = np.mean(everything[np.isfinite(everything)] <= one.kll.get_quantile(q))
        assert rank == pytest.approx(q, abs=0.02)  # KLL rank error, k=200


def test_a_stored_reference_reads_back_whole_and_an_older_one_without_exact_quantiles_too():
    stored = FeatureReference.from_json(REFERENCE.to_json())
    assert stored.transport.tolist() == REFERENCE.transport.tolist()
    assert stored.transport.tolist() == np.quantile(TRAINING, TRANSPORT_LEVELS).tolist()
    current = _sketch(RNG.normal(5.2, 2.0, 20_000))
    assert feature_drift("x", current, stored) == feature_drift("x", current, REFERENCE)
    older = json.loads(REFERENCE.to_json())
    del older["transport"]  # stored before references kept them: read from its sketch
    from_sketch = FeatureReference.from_json(json.dumps(older)).transport
    ranks = np.searchsorted(np.sort(TRAINING), from_sketch) / TRAINING.size
    assert ranks == pytest.approx(TRANSPORT_LEVELS, abs=0.02)  # KLL rank error, k=200
    with pytest.raises(SketchFormatError, match="transport has the wrong length"):
        FeatureReference.from_json(json.dumps(older | {"transport": [1.0, 2.0]}))


@pytest.mark.parametrize(
    "values",
    [np.array([True, False, True] * 400), np.arange(1200, dtype=np.int64),
     np.full(1200, np.nan), np.array([np.inf, -np.inf, 1.0] * 400)],
    ids=["bool", "int", "all-nan", "infinities"],
)  # fmt: skip
def test_unusual_values_never_crash_it(values):
    sketch = FeatureSketch()
    sketch.update(values, REFERENCE.bins)
    drift = feature_drift("x", sketch, REFERENCE)
    assert drift.n == 1200
    assert drift.verdict in ("ok", "warn", "alert")
    reference = FeatureReference.from_values(values)
    if reference is not None:  # all-NaN has no reference to speak of
        assert feature_drift("x", sketch, reference).verdict in ("ok", "warn", "alert")
