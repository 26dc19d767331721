"""The judgement of one rollout interval: candidate against baseline on the same minutes.

Counters (requests, errors by gRPC status, latency buckets, shadow comparisons) are summed over
every replica's statistics windows and snapshotted at the start of an interval; the interval's
own numbers are the difference, so each judgement sees exactly its interval however the
1-minute windows fall. Input and output drift comes from the drift sketches of the last minutes.

Error rate and latency are judged with the statistics `gatectl compare` shows
(registry_client.stats.difference): a check fails only when the data shows the candidate
worse beyond the plan's limit, not when noise puts its estimate there; a check that passes
while the data could not rule such a breach out says so in its detail ("passed for lack of
data"), so that an operator knows to give intervals more requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from registry_client.rollout.plan import RolloutPlan
from registry_client.stats.difference import (
    Difference,
    mann_whitney,
    quantile_difference,
    rate_difference,
)
from registry_client.stats.window import VersionStats, bucket_quantile

__all__ = [
    "CARRIED",
    "NOT_THE_CANDIDATES",
    "Check",
    "Counters",
    "judge",
    "subtract",
    "sum_counters",
]

PASS, FAIL, INSUFFICIENT, SKIPPED = "pass", "fail", "insufficient", "skipped"
PRIMARY, SHADOW = "primary", "shadow"
# Answers that say nothing about a version: the gateway shed load before running it
# (UNAVAILABLE, RESOURCE_EXHAUSTED) or the caller went away (CANCELLED). DEADLINE_EXCEEDED
# counts: a candidate that hangs answers nothing else.
NOT_THE_CANDIDATES = frozenset({"CANCELLED", "UNAVAILABLE", "RESOURCE_EXHAUSTED"})

MIN_DECISIVE_ERRORS = 10
CARRIED = "carried"  # marks counters taken from an earlier interval
Counters = dict[str, dict[str, Any]]  # "version|role" -> counts, JSON as stored


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome: `value` against `threshold`, with what a reader needs to act."""

    name: str
    result: str  # pass | fail | insufficient | skipped
    value: float | None
    threshold: str
    detail: str
    # A check on labels short of them: still waiting, or failed for having waited too long.
    # The rollout records since when it waits (RolloutState.labels_waiting_since).
    waits_for_labels: bool = False
    interval: tuple[float, float] | None = None  # the value's 95% interval, in its unit

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"name": self.name, "result": self.result,
                                 "value": self.value, "threshold": self.threshold,
                                 "detail": self.detail}  # fmt: skip
        if self.interval is not None:
            found["interval"] = list(self.interval)
        return found


def _key(version: str, role: str) -> str:
    return f"{version}|{role}"


def sum_counters(
    windows: Iterable[Mapping[tuple[str, str], VersionStats]], baseline: str
) -> Counters:
    """Counters of the given windows; shadow comparisons only against the baseline's answers."""
    out: Counters = {}
    for window in windows:
        for (version, role), stats in window.items():
            entry = out.setdefault(_key(version, role), _empty())
            entry["requests"] += stats.requests
            for code, count in stats.errors.items():
                entry["errors"][code] = entry["errors"].get(code, 0) + count
            for bucket, count in stats.latency_buckets.items():
                entry["buckets"][str(bucket)] = entry["buckets"].get(str(bucket), 0) + count
            for (primary, _), compared in stats.comparisons.items():
                if primary == baseline:
                    entry["rows"] += compared.rows
                    entry["agreeing"] += compared.agreeing_rows
    return out


def _empty() -> dict[str, Any]:
    return {"requests": 0, "errors": {}, "buckets": {}, "rows": 0, "agreeing": 0}


def subtract(now: Counters, before: Mapping[str, Any]) -> Counters:
    """now - before per counter, never below 0 (a replica's window may have expired)."""

    def minus(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
        return {k: max(v - int(b.get(k, 0)), 0) for k, v in a.items()}

    out: Counters = {}
    for key, entry in now.items():
        old = before.get(key) or _empty()
        out[key] = {
            "requests": max(entry["requests"] - int(old.get("requests", 0)), 0),
            "errors": minus(entry["errors"], old.get("errors", {})),
            "buckets": minus(entry["buckets"], old.get("buckets", {})),
            "rows": max(entry["rows"] - int(old.get("rows", 0)), 0),
            "agreeing": max(entry["agreeing"] - int(old.get("agreeing", 0)), 0),
        }
    return out


@dataclass(frozen=True, slots=True)
class _Side:
    requests: int  # judged ones: those NOT_THE_CANDIDATES excluded
    errors: Mapping[str, int]
    p99: float | None
    rows: int
    agreeing: int
    carried: bool  # the baseline's counters of an earlier interval (CARRIED in the entry)
    buckets: Mapping[int, int]  # latencies of the successful requests

    @classmethod
    def of(cls, counters: Counters, version: str, role: str) -> _Side:
        entry = counters.get(_key(version, role)) or _empty()
        errors = {c: n for c, n in entry["errors"].items() if c not in NOT_THE_CANDIDATES and n}
        ignored = sum(n for c, n in entry["errors"].items() if c in NOT_THE_CANDIDATES)
        buckets = {int(k): int(v) for k, v in entry["buckets"].items() if int(v) > 0}
        return cls(entry["requests"] - ignored, errors, bucket_quantile(buckets, 0.99),
                   entry["rows"], entry["agreeing"], bool(entry.get(CARRIED)), buckets)  # fmt: skip


def judge(
    plan: RolloutPlan,
    shadowing: bool,
    interval: Counters,
    drift: Mapping[str, tuple[float, str] | None],
    load_failures: Mapping[str, str],
) -> list[Check]:
    """Every check of one interval. `drift`: per kind ("input", "output") the largest PSI of
    a feature between the candidate's and the baseline's sketches and that feature, None when
    too few rows were sketched; `load_failures`: replicas where the candidate failed to load,
    and why."""
    role = SHADOW if shadowing else PRIMARY
    candidate = _Side.of(interval, plan.candidate, role)
    baseline = _Side.of(interval, plan.baseline, PRIMARY)
    checks = [_loaded(load_failures), _requests(plan, candidate, baseline),
              _error_rate(plan, candidate, baseline)]  # fmt: skip
    if shadowing:
        checks.append(_agreement(plan, candidate))
    else:
        checks.append(_latency(plan, candidate, baseline))
        checks.append(_drift(plan, "input_drift", drift.get("input")))
        checks.append(_drift(plan, "output_drift", drift.get("output")))
    return checks


def _loaded(failures: Mapping[str, str]) -> Check:
    if not failures:
        return Check("loaded", PASS, 0, "0 replicas failing", "")
    replica, why = sorted(failures.items())[0]
    return Check("loaded", FAIL, len(failures), "0 replicas failing",
                 f"the candidate failed to load on {replica}: {why}")  # fmt: skip


def _requests(plan: RolloutPlan, candidate: _Side, baseline: _Side) -> Check:
    fewest = min(candidate.requests, baseline.requests)
    detail = f"candidate {candidate.requests}, baseline {baseline.requests}"
    if baseline.carried:
        detail += " (its last interval with traffic: it serves none at this step)"
    result = PASS if fewest >= plan.min_requests else INSUFFICIENT
    return Check("requests", result, fewest, f">= {plan.min_requests}", detail)


def _interval(found: Difference, unit: str) -> str:
    return f"{found.estimate:+.2f}{unit} [{found.low:+.2f}, {found.high:+.2f}]"


def _error_rate(plan: RolloutPlan, candidate: _Side, baseline: _Side) -> Check:
    threshold = f"<= +{plan.max_error_rate_delta:g} points"
    if not candidate.requests or not baseline.requests:
        return Check("error_rate", INSUFFICIENT, None, threshold, "no requests to compare")
    limit = plan.max_error_rate_delta
    codes = set(candidate.errors) | set(baseline.errors)

    def difference(code: str) -> Difference:  # in percentage points
        ours, theirs = candidate.errors.get(code, 0), baseline.errors.get(code, 0)
        found = rate_difference(ours, candidate.requests, theirs, baseline.requests)
        return found.scaled(100.0)

    if not codes:  # still an interval: no error in 50 requests rules out little
        found, detail, errors = difference(""), "no errors", 0
    else:  # the status the data shows worst: the highest low end of its interval
        found, code = max(((difference(c), c) for c in sorted(codes)),
                          key=lambda pair: (pair[0].low, pair[0].estimate))  # fmt: skip
        errors = candidate.errors.get(code, 0)
        detail = (f"{code}: candidate {errors} of {candidate.requests}, baseline"
                  f" {baseline.errors.get(code, 0)} of {baseline.requests};"
                  f" {_interval(found, ' pts')}")  # fmt: skip
    value = found.estimate if codes else 0.0
    # Enough failures decide before enough requests do: 40 errors in 100 requests need no
    # 500th request, while a handful are noise.
    enough = candidate.requests >= plan.min_requests or errors >= max(
        MIN_DECISIVE_ERRORS, plan.min_requests * limit / 100.0
    )
    interval = (found.low, found.high)
    if found.low > limit and enough:
        return Check("error_rate", FAIL, value, threshold, detail, interval=interval)
    if candidate.requests < plan.min_requests:
        return Check("error_rate", INSUFFICIENT, value, threshold, detail, interval=interval)
    if found.high > limit:
        detail += (f"; passed for lack of data: up to {found.high:+.2f} pts not ruled out at"
                   f" {candidate.requests} requests")  # fmt: skip
    return Check("error_rate", PASS, value, threshold, detail, interval=interval)


def _latency(plan: RolloutPlan, candidate: _Side, baseline: _Side) -> Check:
    """Over the limits when the p99 is both `max_p99_ratio` times and `min_p99_increase_ms`
    slower; that fails when it is not noise: the bootstrap interval of the p99 increase lies
    wholly over the limits, or (as Kayenta judges) the rank test finds the candidate's
    latencies larger. The p99 of a few dozen requests is about their slowest one, so the rank
    test is what tells a far slower candidate from one stall."""
    threshold = f"<= {plan.max_p99_ratio:g}x or +{plan.min_p99_increase_ms:g} ms"
    if candidate.p99 is None or baseline.p99 is None:
        return Check("p99_ratio", INSUFFICIENT, None, threshold, "no successful requests")
    ratio = candidate.p99 / baseline.p99 if baseline.p99 > 0 else 1.0
    increase_ms = (candidate.p99 - baseline.p99) * 1000.0
    detail = f"candidate {candidate.p99 * 1000:.2f} ms, baseline {baseline.p99 * 1000:.2f} ms"
    if min(candidate.requests, baseline.requests) < plan.min_requests:
        return Check("p99_ratio", INSUFFICIENT, ratio, threshold, detail)
    if ratio <= plan.max_p99_ratio or increase_ms <= plan.min_p99_increase_ms:
        return Check("p99_ratio", PASS, ratio, threshold, detail)
    p99 = quantile_difference(candidate.buckets, baseline.buckets, 0.99)
    ranks = mann_whitney(candidate.buckets, baseline.buckets)
    assert p99 is not None and ranks is not None  # both sides have latencies (p99 above)
    low_ms = p99.low * 1000.0
    # the interval's low end against the baseline's p99: still over both limits
    beyond = low_ms > plan.min_p99_increase_ms and (
        baseline.p99 + p99.low > baseline.p99 * plan.max_p99_ratio
    )
    slower = ranks.significant and ranks.a_larger > 0.5
    p_value = "p<0.001" if ranks.p_value < 0.001 else f"p={ranks.p_value:.2g}"
    detail += f"; p99 {_interval(p99.scaled(1000.0), ' ms')}; rank test {p_value}"
    if beyond or slower:
        return Check("p99_ratio", FAIL, ratio, threshold, detail)
    successes = (sum(candidate.buckets.values()), sum(baseline.buckets.values()))
    detail += (f"; passed for lack of data: over the limits, but not shown at {successes[0]}"
               f" and {successes[1]} successful requests")  # fmt: skip
    return Check("p99_ratio", PASS, ratio, threshold, detail)


def _agreement(plan: RolloutPlan, candidate: _Side) -> Check:
    threshold = f">= {plan.min_agreement:g}"
    if candidate.rows == 0:
        if candidate.requests >= plan.min_requests:  # compared, but no class scores to agree on
            return Check("agreement", SKIPPED, None, threshold, "no class-score outputs")
        return Check("agreement", INSUFFICIENT, None, threshold, "no rows compared yet")
    agreement = candidate.agreeing / candidate.rows
    detail = f"{candidate.agreeing} of {candidate.rows} rows agree with the baseline"
    if candidate.rows < plan.min_requests:
        return Check("agreement", INSUFFICIENT, agreement, threshold, detail)
    return Check("agreement", PASS if agreement >= plan.min_agreement else FAIL, agreement,
                 threshold, detail)  # fmt: skip


def _drift(plan: RolloutPlan, name: str, drift: tuple[float, str] | None) -> Check:
    threshold = f"<= {plan.max_psi:g} PSI"
    if drift is None:
        return Check(name, SKIPPED, None, threshold, "too few rows sketched to judge")
    psi, feature = drift
    result = FAIL if psi > plan.max_psi else PASS
    return Check(name, result, psi, threshold, f"largest on {feature}")
