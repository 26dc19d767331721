"""The drift sketches' row sampling: every row up to the cap, a uniform share beyond it."""

from __future__ import annotations

import random

import numpy as np
from prometheus_client import CollectorRegistry, Counter
from scipy import stats

from gateway.drift.recorder import DriftRecorder
from gateway.drift.sampling import RATE_PERIOD_SECONDS, RowSampler
from registry_client.drift.sketch import FeatureSketch, decode_sketches
from registry_client.drift.store import MINUTE

WINDOW_NOW = 6_000_000.0  # one minute window throughout: the sampler's clock is its own


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _recorder(cap: float, clock: _Clock, seed: int = 7) -> DriftRecorder:
    dropped = Counter("dropped", "rows dropped", ["model"], registry=CollectorRegistry())
    sampler = RowSampler(cap, clock=clock, draw=random.Random(seed).random)
    return DriftRecorder(dropped, 1_000_000, clock=lambda: WINDOW_NOW, sampler=sampler)


def _serve(recorder: DriftRecorder, version: str, values: np.ndarray) -> None:
    """One request a row, as the gateway's batch-1 callers send them."""
    for value in values:
        recorder.observe("m", version, {"x": np.array([[value]], dtype=np.float32)})


def _second(recorder: DriftRecorder, clock: _Clock, served: dict[str, np.ndarray]) -> int:
    """One rate period of traffic, folded as the fold thread does, then the period's end;
    returns the rows sketched."""
    for version, values in served.items():
        _serve(recorder, version, values)
    folded = recorder.fold()
    clock.now += RATE_PERIOD_SECONDS
    return folded + recorder.fold()


def _windows(recorder: DriftRecorder) -> dict[str, tuple[int, FeatureSketch]]:
    """Each version's minute window: its rows and the sketch of its one feature."""
    windows = {}
    for write in recorder.pending():
        assert write.granularity == MINUTE
        rows, features = decode_sketches(write.payload)
        windows[write.version] = (rows, features["x[0]"])
    return windows


def test_every_row_is_sketched_while_a_version_stays_under_the_cap():
    clock = _Clock()
    recorder = _recorder(500, clock)
    folded = [_second(recorder, clock, {"1": np.arange(400, dtype=np.float32)}) for _ in range(3)]
    assert folded == [400, 400, 400]


def test_over_the_cap_a_version_keeps_about_the_cap_and_a_quiet_one_keeps_all():
    clock = _Clock()
    recorder = _recorder(500, clock)
    busy = np.random.default_rng(1).normal(3.0, 2.0, 5000).astype(np.float32)
    # The first period measures the rates: every row is kept while they are unknown.
    assert _second(recorder, clock, {"1": busy, "2": np.zeros(100, np.float32)}) == 5100
    for _ in range(4):
        _second(recorder, clock, {"1": busy, "2": np.zeros(100, np.float32)})
    windows = _windows(recorder)
    # 4 periods at a share of 500/5000: binomial(20000, 0.1), sd 42; the seed fixes the draw.
    assert abs(windows["1"][0] - 5000 - 2000) < 200
    assert windows["1"][1].count == windows["1"][0]  # a row's values are kept with it
    assert windows["2"][0] == 500


def test_the_sample_has_the_distribution_of_all_the_rows():
    clock = _Clock()
    recorder = _recorder(200, clock)
    served = np.random.default_rng(2).normal(3.0, 2.0, 4000).astype(np.float32)
    for _ in range(11):
        _second(recorder, clock, {"1": served})
    rows, sketch = _windows(recorder)["1"]
    assert 5000 < rows < 7000  # the first period whole, then ~200 of 4000 in each of 10
    # Compared in rank, where the sketch's own error is bounded (KLL at k=200: 1.65% at 99%
    # confidence) whatever the density: compared in value, the tails' error swung past 0.25
    # in 8 of 150 runs; the rank error's worst in 150 runs was 0.017.
    quantiles = np.linspace(0.05, 0.95, 19)
    values = stats.norm.ppf(quantiles, loc=3.0, scale=2.0)
    ranks = [sketch.kll.get_rank(float(value)) for value in values]
    assert np.allclose(ranks, quantiles, atol=0.04)


def test_a_version_whose_traffic_falls_is_sketched_whole_again():
    clock = _Clock()
    recorder = _recorder(500, clock)
    for _ in range(2):
        _second(recorder, clock, {"1": np.zeros(5000, np.float32)})
    assert _second(recorder, clock, {}) == 0  # a quiet period: its share is forgotten
    assert _second(recorder, clock, {"1": np.zeros(300, np.float32)}) == 300


def test_a_clock_set_back_starts_the_period_again_and_keeps_every_row():
    clock = _Clock()
    recorder = _recorder(500, clock)
    _serve(recorder, "1", np.zeros(5000, np.float32))
    clock.now -= 3600.0
    assert recorder.fold() == 5000  # no share from a negative interval
    _serve(recorder, "1", np.zeros(300, np.float32))
    assert recorder.fold() == 300
