"""How two versions' request statistics differ, with 95% confidence; pure functions.

Error rates: Newcombe's hybrid score interval for a difference of proportions (his method 10),
sound at zero and tiny counts where the Wald interval collapses to a point. Latency: a
percentile bootstrap of a quantile's difference over the gateways' log-spaced latency buckets
(a resample of a side is a multinomial draw of its own size from its bucket shares, so a
million requests cost no more than a thousand), and the Mann-Whitney U test over the bucketed
latencies, each bucket a group of ties: as Kayenta judges a canary, a rank test for "is it
slower at all" beside an effect size for "by how much".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from registry_client.stats.window import (
    BUCKET_BASE_SECONDS,
    BUCKETS_PER_DOUBLING,
    bucket_quantile,
)

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "CONFIDENCE",
    "Difference",
    "RankTest",
    "mann_whitney",
    "quantile_difference",
    "quantile_differences",
    "rate_difference",
    "wilson_interval",
]

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
# Fixed: the same statistics always print the same interval (a report read twice, or by two
# people, must not move in its last digit).
BOOTSTRAP_SEED = 20_160_919
_NORMAL = NormalDist()


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a number between 0 and 1, got {confidence!r}")
    return _NORMAL.inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True, slots=True)
class Difference:
    """An estimate of a - b and its confidence interval; `p_value` where a test gives one."""

    estimate: float
    low: float
    high: float
    p_value: float | None = None

    @property
    def significant(self) -> bool:
        """Whether the interval excludes zero."""
        return self.low > 0 or self.high < 0

    def scaled(self, factor: float) -> Difference:
        """The same difference in another unit (fractions to points, seconds to ms)."""
        return Difference(self.estimate * factor, self.low * factor, self.high * factor,
                          self.p_value)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high,
                "p_value": self.p_value, "significant": self.significant}  # fmt: skip


def wilson_interval(
    successes: int, trials: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Wilson's score interval for a proportion (without continuity correction)."""
    _check_count(successes, trials, "successes")
    z = _z(confidence)
    p = successes / trials
    z2n = z * z / trials
    center = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / trials + z2n / (4 * trials)) / (1 + z2n)
    # Clamped: at 0 or n successes the bound is exactly 0 or 1, not a rounding away from it.
    low = 0.0 if successes == 0 else max(center - half, 0.0)
    high = 1.0 if successes == trials else min(center + half, 1.0)
    return low, high


def rate_difference(
    errors_a: int, requests_a: int, errors_b: int, requests_b: int,
    confidence: float = CONFIDENCE,
) -> Difference:  # fmt: skip
    """a's rate minus b's, as fractions: Newcombe's hybrid score interval, and the two-sided
    p-value of the pooled two-proportion z test (1 when neither side has any error)."""
    _check_count(errors_a, requests_a, "errors_a")
    _check_count(errors_b, requests_b, "errors_b")
    p1, p2 = errors_a / requests_a, errors_b / requests_b
    l1, u1 = wilson_interval(errors_a, requests_a, confidence)
    l2, u2 = wilson_interval(errors_b, requests_b, confidence)
    estimate = p1 - p2
    low = estimate - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = estimate + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    pooled = (errors_a + errors_b) / (requests_a + requests_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / requests_a + 1 / requests_b))
    p_value = 1.0 if spread == 0 else math.erfc(abs(estimate) / spread / math.sqrt(2))
    return Difference(estimate, low, high, min(p_value, 1.0))


def _check_count(count: int, total: int, name: str) -> None:
    if total <= 0:
        raise ValueError(f"{name}: expected a positive number of trials, got {total}")
    if not 0 <= count <= total:
        raise ValueError(f"{name}: expected 0 to {total}, got {count}")


@dataclass(frozen=True, slots=True)
class RankTest:
    """The Mann-Whitney U test of a's latencies against b's. `u` is a's statistic;
    `a_larger` = u / (n_a n_b), the chance that a request of a took longer than one of b
    (ties counting half): 0.5 when neither is slower."""

    u: float
    a_larger: float
    p_value: float

    @property
    def significant(self) -> bool:
        """Whether the test rejects "neither is slower" at the 95% level."""
        return self.p_value < 1 - CONFIDENCE


def mann_whitney(buckets_a: Mapping[int, int], buckets_b: Mapping[int, int]) -> RankTest | None:
    """Two-sided test over bucketed latencies (bucket -> count): the normal approximation with
    the tie and continuity corrections (scipy.stats.mannwhitneyu's "asymptotic" method).
    None when a side has no latencies."""
    n_a, n_b = sum(buckets_a.values()), sum(buckets_b.values())
    if n_a <= 0 or n_b <= 0:
        return None
    rank_sum, below, ties = 0.0, 0, 0
    for bucket in sorted(set(buckets_a) | set(buckets_b)):
        ours, tied = buckets_a.get(bucket, 0), buckets_a.get(bucket, 0) + buckets_b.get(bucket, 0)
        rank_sum += ours * (below + (tied + 1) / 2)  # every tie takes the group's mean rank
        below += tied
        ties += tied**3 - tied
    total = n_a + n_b
    u = rank_sum - n_a * (n_a + 1) / 2
    mean = n_a * n_b / 2
    variance = n_a * n_b / 12 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:  # every latency in one bucket: nothing tells the sides apart
        return RankTest(u, u / (n_a * n_b), 1.0)
    z = (abs(u - mean) - 0.5) / math.sqrt(variance)
    p_value = min(math.erfc(max(z, 0.0) / math.sqrt(2)), 1.0)
    return RankTest(u, u / (n_a * n_b), p_value)


def quantile_difference(
    buckets_a: Mapping[int, int], buckets_b: Mapping[int, int], q: float, *,
    resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> Difference | None:  # fmt: skip
    """a's q-quantile minus b's, in seconds, with a percentile bootstrap interval; the
    estimate is bucket_quantile()'s. None when a side has no latencies."""
    return quantile_differences(buckets_a, buckets_b, (q,), resamples=resamples,
                                confidence=confidence, seed=seed)[q]  # fmt: skip


def quantile_differences(
    buckets_a: Mapping[int, int], buckets_b: Mapping[int, int], qs: Sequence[float], *,
    resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> dict[float, Difference | None]:  # fmt: skip
    """quantile_difference() at each of `qs`, from one set of resamples per side (the draws
    dominate the cost; each quantile's interval is what quantile_difference gives alone)."""
    for q in qs:
        if not 0 < q < 1:
            raise ValueError(f"q: expected a quantile between 0 and 1, got {q!r}")
    pairs = [(bucket_quantile(buckets_a, q), bucket_quantile(buckets_b, q)) for q in qs]
    estimates = [ours - theirs for ours, theirs in pairs if ours is not None and theirs is not None]
    if len(estimates) != len(qs):  # a side has no latencies
        return dict.fromkeys(qs)
    rng = np.random.default_rng(seed)
    drawn = _resampled_quantiles(rng, buckets_a, qs, resamples) - _resampled_quantiles(
        rng, buckets_b, qs, resamples
    )
    tail = (1 - confidence) / 2
    found: dict[float, Difference | None] = {}
    for i, q in enumerate(qs):
        low, high = np.quantile(drawn[i], [tail, 1 - tail])
        found[q] = Difference(estimates[i], float(low), float(high))
    return found


def _resampled_quantiles(
    rng: np.random.Generator, buckets: Mapping[int, int], qs: Sequence[float], resamples: int
) -> np.ndarray:
    """Each q-quantile (rows) of `resamples` bootstrap resamples (columns), as
    bucket_quantile() computes it."""
    indices = np.array(sorted(b for b, n in buckets.items() if n > 0))
    counts = np.array([buckets[b] for b in indices], dtype=np.int64)
    total = int(counts.sum())
    drawn = rng.multinomial(total, counts / total, size=resamples)
    cumulative = drawn.cumsum(axis=1)
    rows = np.arange(resamples)
    found = np.empty((len(qs), resamples), dtype=np.float64)
    for i, q in enumerate(qs):
        rank = q * total
        at = np.argmax(cumulative >= rank, axis=1)  # q > 0, so this bucket holds a request
        count = drawn[rows, at]
        within = (rank - (cumulative[rows, at] - count)) / count
        exponent = (indices[at] + within) / BUCKETS_PER_DOUBLING
        found[i] = BUCKET_BASE_SECONDS * np.exp2(exponent)
    return found
