"""The statistics behind `gatectl compare`'s differences and the rollout judge, against
published values and scipy/numpy references: Wilson and Newcombe intervals for error rates,
the Mann-Whitney U test and the bootstrap over bucketed latencies."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import stats

from registry_client.stats.difference import (
    mann_whitney,
    quantile_difference,
    quantile_differences,
    rate_difference,
    wilson_interval,
)
from registry_client.stats.window import (
    BUCKET_BASE_SECONDS,
    BUCKETS_PER_DOUBLING,
    bucket_quantile,
    latency_bucket,
)


def _buckets(seconds: np.ndarray) -> dict[int, int]:
    return dict(Counter(latency_bucket(float(s)) for s in seconds))


def _expanded(buckets: dict[int, int]) -> np.ndarray:
    return np.repeat(np.array(list(buckets)), list(buckets.values()))


@pytest.mark.parametrize(("successes", "trials"), [(0, 10), (1, 10), (7, 10), (10, 10),
                                                   (3, 1000), (500, 1000), (1, 1)])  # fmt: skip
def test_wilson_interval_is_scipys(successes: int, trials: int) -> None:
    expected = stats.binomtest(successes, trials).proportion_ci(method="wilson")
    low, high = wilson_interval(successes, trials)
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-12)


# Newcombe (1998), "Interval estimation for the difference between independent proportions",
# Statistics in Medicine 17, table II, method 10 (the hybrid score interval).
@pytest.mark.parametrize(
    ("a", "n", "b", "m", "low", "high"),
    [(56, 70, 48, 80, 0.0524, 0.3339), (9, 10, 3, 10, 0.1705, 0.8090),
     (5, 56, 0, 29, -0.0381, 0.1926), (0, 10, 0, 20, -0.1611, 0.2775),
     (0, 10, 0, 10, -0.2775, 0.2775), (10, 10, 0, 20, 0.6791, 1.0000),
     (10, 10, 0, 10, 0.6075, 1.0000)],
)  # fmt: skip
def test_rate_difference_is_newcombes_published_interval(a, n, b, m, low, high) -> None:
    found = rate_difference(a, n, b, m)
    assert found.estimate == pytest.approx(a / n - b / m)
    assert (round(found.low, 4), round(found.high, 4)) == (low, high)


@pytest.mark.parametrize(("a", "n", "b", "m"), [(10, 1000, 50, 1000), (3, 40, 1, 900),
                                                (120, 5000, 118, 5100)])  # fmt: skip
def test_rate_difference_p_value_is_the_chi_square_tests(a, n, b, m) -> None:
    # The pooled two-proportion z test is the 2x2 chi-square test without Yates' correction.
    expected = stats.chi2_contingency([[a, n - a], [b, m - b]], correction=False).pvalue
    assert rate_difference(a, n, b, m).p_value == pytest.approx(expected, rel=1e-9)


def test_no_error_on_either_side_has_p_value_1_and_still_an_interval() -> None:
    found = rate_difference(0, 50, 0, 5000)
    assert found.p_value == 1.0 and not found.significant
    assert found.low < 0 < found.high  # 50 requests without an error rule out little


def test_error_rate_intervals_cover_the_true_difference_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(1000):
        a, b = int(rng.binomial(2000, 0.01)), int(rng.binomial(2000, 0.05))
        found = rate_difference(a, 2000, b, 2000)
        covered += found.low <= -0.04 <= found.high
    assert 0.93 <= covered / 1000 <= 0.975


@pytest.mark.parametrize("error", [None, "bad_total", "too_many"])
def test_impossible_counts_are_refused(error: str | None) -> None:
    if error is None:
        rate_difference(1, 2, 0, 1)
        return
    with pytest.raises(ValueError, match="errors_a: expected"):
        rate_difference(3, 2, 0, 1) if error == "too_many" else rate_difference(0, 0, 0, 1)


@pytest.mark.parametrize(
    ("shift", "scale", "sizes"),
    [(0.0, 1.0, (300, 400)), (0.1, 1.0, (300, 400)), (0.0, 3.0, (50, 2000)), (-0.3, 1.0, (9, 7))],
)
def test_mann_whitney_over_buckets_is_scipys_with_ties(shift, scale, sizes) -> None:
    rng = np.random.default_rng(5)
    ours = _buckets(rng.lognormal(-7 + shift, 0.5 * scale, sizes[0]))
    theirs = _buckets(rng.lognormal(-7, 0.5, sizes[1]))
    found = mann_whitney(ours, theirs)
    expected = stats.mannwhitneyu(_expanded(ours), _expanded(theirs), method="asymptotic")
    assert found is not None
    assert found.u == expected.statistic
    assert found.p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_mann_whitney_of_identical_samples_finds_nothing_and_of_disjoint_ones_everything() -> None:
    same = mann_whitney({10: 100}, {10: 100})
    assert same is not None and same.p_value == 1.0 and same.a_larger == 0.5
    slower = mann_whitney({90: 20}, {10: 20})
    assert slower is not None and slower.significant and slower.a_larger == 1.0
    assert mann_whitney({}, {10: 1}) is None


def test_quantile_difference_estimate_is_the_bucket_quantiles() -> None:
    rng = np.random.default_rng(2)
    ours, theirs = _buckets(rng.lognormal(-6.5, 0.5, 2000)), _buckets(rng.lognormal(-7, 0.5, 2000))
    found = quantile_difference(ours, theirs, 0.9)
    assert found is not None
    expected = (bucket_quantile(ours, 0.9) or 0) - (bucket_quantile(theirs, 0.9) or 0)
    assert found.estimate == expected
    assert found.low < found.estimate < found.high and found.significant
    assert quantile_difference(ours, theirs, 0.9) == found  # seeded: the same every time
    assert quantile_difference(ours, {}, 0.9) is None


def test_bootstrap_over_bucket_counts_matches_resampling_every_request() -> None:
    rng = np.random.default_rng(3)
    ours, theirs = _buckets(rng.lognormal(-6.9, 0.6, 800)), _buckets(rng.lognormal(-7, 0.6, 600))
    found = quantile_difference(ours, theirs, 0.5, resamples=4000)
    assert found is not None
    # The reference resamples the requests themselves, as a textbook bootstrap does.
    a, b = _expanded(ours), _expanded(theirs)
    draws = [
        (bucket_quantile(Counter(rng.choice(a, a.size).tolist()), 0.5) or 0.0)
        - (bucket_quantile(Counter(rng.choice(b, b.size).tolist()), 0.5) or 0.0)
        for _ in range(4000)
    ]
    low, high = np.quantile(draws, [0.025, 0.975])
    width = high - low
    assert abs(found.low - low) < 0.1 * width and abs(found.high - high) < 0.1 * width


def _bucket_probabilities(mu: float, sigma: float) -> dict[int, int]:
    """A lognormal distribution's share of each latency bucket, as counts out of 10^12."""
    edges = BUCKET_BASE_SECONDS * np.exp2(np.arange(1, 226) / BUCKETS_PER_DOUBLING)
    cdf = stats.lognorm.cdf(edges, sigma, scale=np.exp(mu))
    shares = np.diff(np.concatenate([[0.0], cdf]))
    return {i: round(float(s) * 1e12) for i, s in enumerate(shares) if s > 0}


def test_latency_intervals_cover_the_true_difference_about_95_percent_of_the_time() -> None:
    # The truth is each distribution's bucketed median, which is what the estimate estimates.
    truth = (bucket_quantile(_bucket_probabilities(-6.8, 0.5), 0.5) or 0.0) - (
        bucket_quantile(_bucket_probabilities(-7, 0.5), 0.5) or 0.0
    )
    rng = np.random.default_rng(7)
    covered, runs = 0, 200
    for _ in range(runs):
        ours = _buckets(rng.lognormal(-6.8, 0.5, 1000))
        theirs = _buckets(rng.lognormal(-7, 0.5, 1000))
        found = quantile_difference(ours, theirs, 0.5, resamples=1000)
        assert found is not None
        covered += found.low <= truth <= found.high
    assert 0.89 <= covered / runs <= 0.99


def test_several_quantiles_from_one_set_of_resamples_match_each_alone():
    rng = np.random.default_rng(3)
    a = Counter(latency_bucket(v) for v in rng.lognormal(-7.0, 0.5, 3_000))
    b = Counter(latency_bucket(v) for v in rng.lognormal(-6.9, 0.5, 2_000))
    together = quantile_differences(a, b, (0.5, 0.9, 0.99))
    assert together == {q: quantile_difference(a, b, q) for q in (0.5, 0.9, 0.99)}
    assert quantile_differences(a, {}, (0.5, 0.9)) == {0.5: None, 0.9: None}
