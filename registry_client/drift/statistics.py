"""Drift of one feature against a baseline (a reference profile, or another version's inputs
over the same window), as effect sizes: PSI, KS distance, normalised Wasserstein, missing-rate
and out-of-range increase. Not p-values: over large windows the sketch error
exceeds the KS critical value.

Error: PSI and out-of-range are exact when the current histogram was counted on the
reference's bins (`exact_bins`), else read from the KLL sketch; KS is within about 0.03 and the
normalised Wasserstein within about 0.04 of the exact values (KLL sketches, k=200; a reference
built from data holds its exact quantiles, so only the current window's sketch errs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from registry_client.drift.reference import FeatureReference
from registry_client.drift.sketch import (
    QUANTILE_LEVELS,
    TRANSPORT_LEVELS,
    FeatureSketch,
    share_below,
)

__all__ = ["FeatureDrift", "Thresholds", "dataset_drift", "feature_drift"]

OK, WARN, ALERT, INSUFFICIENT = "ok", "warn", "alert", "insufficient"
_SEVERITY = {OK: 0, WARN: 1, ALERT: 2}
_PSI_FLOOR = 1e-4  # empty bins would make PSI infinite
_DECILE_OF_BIN = np.clip(np.arange(len(QUANTILE_LEVELS) + 1) - 2, 0, 9)  # 0.1 is edge 2


@dataclass(frozen=True, slots=True)
class Thresholds:
    """(warn, alert) per statistic, and the fewest values a verdict needs."""

    psi: tuple[float, float] = (0.1, 0.25)
    ks: tuple[float, float] = (0.1, 0.2)
    # In baseline standard deviations. Checked besides PSI and KS because a 0.5-sigma shift of a
    # normal feature sits just under both PSI's (0.245) and KS's (0.197) alert lines, yet is one.
    wasserstein: tuple[float, float] = (0.15, 0.3)
    missing: tuple[float, float] = (0.01, 0.05)
    out_of_range: tuple[float, float] = (0.03, 0.10)
    min_samples: int = 1000


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    feature: str
    n: int
    psi: float | None
    ks: float | None
    wasserstein: float | None  # over the baseline's standard deviation
    missing_increase: float
    out_of_range: float | None  # share of finite values outside the baseline's [min, max]
    verdict: str
    exact_bins: bool


def _level(value: float | None, limits: tuple[float, float]) -> str:
    if value is None or value < limits[0]:
        return OK
    return ALERT if value >= limits[1] else WARN


def _decile_mass(bin_mass: np.ndarray) -> np.ndarray:
    return np.bincount(_DECILE_OF_BIN, weights=bin_mass, minlength=10)


def _psi(current: np.ndarray, baseline: np.ndarray) -> float:
    c = np.maximum(current, _PSI_FLOOR)
    b = np.maximum(baseline, _PSI_FLOOR)
    return float(np.sum((c - b) * np.log(c / b)))


def _ks(current: FeatureSketch, baseline: FeatureReference) -> float:
    points = np.union1d(current.kll.get_quantiles(list(TRANSPORT_LEVELS)),
                        baseline.kll.get_quantiles(list(TRANSPORT_LEVELS)))  # fmt: skip
    ours = np.asarray(current.kll.get_cdf(list(points))[:-1])
    theirs = np.asarray(baseline.kll.get_cdf(list(points))[:-1])
    return float(np.max(np.abs(ours - theirs)))


def feature_drift(
    feature: str,
    current: FeatureSketch,
    baseline: FeatureReference,
    thresholds: Thresholds = Thresholds(),
) -> FeatureDrift:
    """Every statistic of one feature and its verdict (worst level; `insufficient` under
    thresholds.min_samples values)."""
    missing = (current.missing / current.count if current.count else 0.0) - baseline.missing_rate
    if current.finite == 0 or baseline.finite == 0:
        verdict = INSUFFICIENT if current.count < thresholds.min_samples else (
            _level(missing, thresholds.missing))  # fmt: skip
        return FeatureDrift(feature, current.count, None, None, None, missing, None, verdict,
                            False)  # fmt: skip
    bins = baseline.bins
    exact = current.histogram is not None and current.bins_id == bins.bins_id
    if exact:
        assert current.histogram is not None
        bin_mass = current.histogram / current.finite
        out_of_range = (current.below + current.above) / current.finite
    else:
        below_each_edge = share_below(current.kll, baseline.edges)
        bin_mass = np.diff(np.concatenate([[0.0], below_each_edge, [1.0]]))
        below_min = current.kll.get_cdf([baseline.minimum], False)[0]
        above_max = 1.0 - current.kll.get_cdf([baseline.maximum], True)[0]
        out_of_range = float(max(below_min, 0.0) + max(above_max, 0.0))
    psi = _psi(_decile_mass(bin_mass), _decile_mass(baseline.bin_mass))
    ks = _ks(current, baseline)
    ours = np.asarray(current.kll.get_quantiles(list(TRANSPORT_LEVELS)))
    scale = baseline.std if baseline.std > 0 else 1.0
    wasserstein = float(np.mean(np.abs(ours - baseline.transport)) / scale)
    if current.count < thresholds.min_samples:
        verdict = INSUFFICIENT
    else:
        levels = (_level(psi, thresholds.psi), _level(ks, thresholds.ks),
                  _level(wasserstein, thresholds.wasserstein), _level(missing, thresholds.missing),
                  _level(out_of_range, thresholds.out_of_range))  # fmt: skip
        verdict = max(levels, key=_SEVERITY.__getitem__)
    return FeatureDrift(feature, current.count, psi, ks, wasserstein, missing, out_of_range,
                        verdict, exact)  # fmt: skip


def dataset_drift(features: Sequence[FeatureDrift]) -> str:
    """`alert` when at least half of the features with a verdict drift (warn or alert),
    `insufficient` when none has a verdict, else `ok`."""
    judged = [f for f in features if f.verdict != INSUFFICIENT]
    if not judged:
        return INSUFFICIENT
    drifting = sum(1 for f in judged if f.verdict in (WARN, ALERT))
    return ALERT if 2 * drifting >= len(judged) else OK
