"""Rollout plans and the judgement of one interval, pure: validation with messages naming the
field, the stored document, the rules each phase serves, interval counters and every check."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from registry_client.records.rule_documents import Shadow, Split
from registry_client.rollout.judge import Check, judge, subtract, sum_counters
from registry_client.rollout.plan import RolloutPlan, RolloutState, served_split
from registry_client.schema import SchemaError
from registry_client.stats.window import VersionStats, bucket_quantile, latency_bucket

PLAN = RolloutPlan("credit", "2", "1", (10, 50, 100), 60.0, min_requests=100)


def _state(**changes: object) -> RolloutState:
    base = RolloutState(PLAN, "progressing", 0, 1.0, "alice", 1.0, 3)
    return base.evolve(**changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"candidate": "1"}, "candidate: expected a version other than the baseline"),
        ({"steps": ()}, "steps: expected 1 to 20 weights"),
        ({"steps": (10, 5)}, "steps[1]: expected more than the step before (10), got 5"),
        ({"steps": (0, 50)}, "steps[0]: expected an integer from 1 to 100, got 0"),
        ({"steps": (50, 101)}, "steps[1]: expected an integer from 1 to 100, got 101"),
        ({"steps": (True,)}, "steps[0]: expected an integer from 1 to 100"),
        ({"interval_seconds": 0.5}, "interval_seconds: expected a number from 1 to"),
        ({"interval_seconds": float("nan")}, "interval_seconds: expected a number"),
        ({"min_agreement": 1.5}, "min_agreement: expected a number from 0 to 1"),
        ({"max_p99_ratio": 0.9}, "max_p99_ratio: expected a number from 1 to"),
        ({"max_psi": 0}, "max_psi: expected more than 0"),
        ({"shadow_percent": 0}, "shadow_percent: expected more than 0"),
        ({"min_requests": 0}, "min_requests: expected an integer from 1"),
        ({"failures_to_rollback": 1.5}, "failures_to_rollback: expected an integer"),
        ({"model": "../x"}, "model '../x' is not valid"),
    ],
)
def test_a_plan_that_cannot_work_is_refused_naming_the_field(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(SchemaError, match=re.escape(message)):
        _replace(PLAN, changes).validate()


def _replace(plan: RolloutPlan, changes: dict[str, object]) -> RolloutPlan:
    doc = plan.to_dict() | changes
    return RolloutPlan(**doc)  # the point is to pass wrong types


def test_the_stored_document_round_trips_and_a_damaged_one_is_refused() -> None:
    state = _state(snapshot={"window": 5, "counters": {}}, last_checks=({"name": "x"},),
                   last_decision={"decision": "hold"}, failures=1)  # fmt: skip
    assert RolloutState.from_json(state.to_json()) == state
    doc = json.loads(state.to_json())
    for damage, message in (
        ({"status": "dancing"}, "status: expected one of"),
        ({"step": 3}, "step: expected -1 to 2"),
        ({"plan": {**doc["plan"], "steps": [50, 10]}}, "steps"),
        ({"revision": "x"}, "malformed"),
    ):
        with pytest.raises(SchemaError, match=message):
            RolloutState.from_json(json.dumps(doc | damage))
    with pytest.raises(SchemaError, match=r"not JSON|malformed"):
        RolloutState.from_json("[" * 5000)


def test_each_phase_serves_its_rule_and_keeps_other_versions_loaded() -> None:
    other, idle = Shadow("7", 5.0), Split("3", 0)
    rule = (Split("1", 100), Split("2", 0), idle)
    assert served_split(_state(status="shadowing", step=-1), rule, (other,)) == (
        (Split("1", 100), idle), (other, Shadow("2", 100.0)))  # fmt: skip
    assert served_split(_state(step=0), rule, (other, Shadow("2", 50.0))) == (
        (Split("1", 90), Split("2", 10), idle), (other,))  # fmt: skip
    # At 100% the baseline stays in the rule at weight 0: loaded, so a rollback is instant.
    assert served_split(_state(step=2), rule, ())[0] == (Split("1", 0), Split("2", 100), idle)
    assert served_split(_state(status="promoted", step=2), rule, ())[0] == (Split("2", 100), idle)
    assert served_split(_state(status="rolled_back"), rule, ())[0] == (Split("1", 100), idle)
    paused = _state(status="paused", paused_status="progressing", step=1)
    # Resumed on top of an operator's rule: the rollout owns the traffic again.
    assert served_split(paused, (Split("1", 30), Split("3", 70)), ())[0] == (
        Split("1", 50), Split("2", 50), Split("3", 0))  # fmt: skip


def test_bucketed_latency_quantiles_are_within_a_bucket_of_the_exact_ones() -> None:
    rng = np.random.default_rng(3)
    for values in (rng.lognormal(-7, 1, 20_000), rng.uniform(0.001, 0.002, 5_000)):
        buckets: dict[int, int] = {}
        for v in values:
            buckets[latency_bucket(float(v))] = buckets.get(latency_bucket(float(v)), 0) + 1
        for q in (0.5, 0.9, 0.99):
            estimate = bucket_quantile(buckets, q)
            assert estimate is not None
            assert abs(estimate / float(np.quantile(values, q)) - 1) < 0.1
    assert bucket_quantile({}, 0.99) is None


def _window(version: str, role: str, requests: int, errors: dict[str, int],
            latency: float, agreeing: int = 0, rows: int = 0) -> VersionStats:  # fmt: skip
    stats = VersionStats(version, role)
    for code, count in errors.items():
        for _ in range(count):
            stats.record(code, None)
    for _ in range(requests - sum(errors.values())):
        stats.record("OK", latency)
    compared = stats.comparison("1", "probabilities")
    compared.rows, compared.agreeing_rows = rows, agreeing
    return stats


def _interval(*stats: VersionStats) -> dict[str, dict[str, object]]:
    return sum_counters([{(s.version, s.role): s for s in stats}], baseline="1")


def _results(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.result for c in checks}


def test_counters_of_an_interval_are_the_difference_of_two_snapshots() -> None:
    before = _interval(_window("2", "primary", 100, {"INTERNAL": 1}, 0.001))
    now = _interval(_window("2", "primary", 250, {"INTERNAL": 4}, 0.001))
    interval = subtract(now, before)["2|primary"]
    assert interval["requests"] == 150 and interval["errors"] == {"INTERNAL": 3}
    assert sum(interval["buckets"].values()) == 150 - 3
    # A window that expired (smaller now) never makes a negative count.
    assert subtract(before, now)["2|primary"]["requests"] == 0


def test_a_good_candidate_passes_and_a_short_interval_waits_for_data() -> None:
    good = _interval(_window("1", "primary", 900, {"INVALID_ARGUMENT": 9}, 0.002),
                     _window("2", "primary", 300, {"INVALID_ARGUMENT": 3}, 0.002))  # fmt: skip
    drift = {"input": (0.01, "input[0]"), "output": (0.02, "output:probabilities[1]")}
    assert set(_results(judge(PLAN, False, good, drift, {})).values()) == {"pass"}
    few = _interval(_window("1", "primary", 900, {}, 0.002), _window("2", "primary", 40, {}, 0.002))
    assert _results(judge(PLAN, False, few, {}, {}))["requests"] == "insufficient"


def test_each_fault_fails_its_own_check() -> None:
    base = _window("1", "primary", 1000, {"INTERNAL": 1}, 0.002)
    erring = _interval(base, _window("2", "primary", 1000, {"INTERNAL": 50}, 0.002))
    check = next(c for c in judge(PLAN, False, erring, {}, {}) if c.name == "error_rate")
    assert check.result == "fail" and check.value == pytest.approx(4.9)
    assert "INTERNAL: candidate 50 of 1000, baseline 1 of 1000" in check.detail
    slow = _interval(base, _window("2", "primary", 1000, {}, 0.006))
    check = next(c for c in judge(PLAN, False, slow, {}, {}) if c.name == "p99_ratio")
    assert check.result == "fail" and 2.7 < (check.value or 0) < 3.3
    drifting = {"input": (0.9, "input[0]"), "output": None}
    checks = _results(judge(PLAN, False, _interval(base, base), drifting, {}))
    assert checks["input_drift"] == "fail" and checks["output_drift"] == "skipped"
    failures = {"gw-a": "sha256 mismatch"}
    assert _results(judge(PLAN, False, _interval(base, base), {}, failures))["loaded"] == "fail"


def test_while_shadowing_agreement_is_judged_on_rows_compared_with_the_baseline() -> None:
    base = _window("1", "primary", 1000, {}, 0.002)
    agreeing = _interval(base, _window("2", "shadow", 1000, {}, 0.004, agreeing=995, rows=1000))
    assert _results(judge(PLAN, True, agreeing, {}, {}))["agreement"] == "pass"
    # The shadow's latency is not judged: it runs at low priority, on spare CPU.
    assert "p99_ratio" not in _results(judge(PLAN, True, agreeing, {}, {}))
    disagreeing = _interval(base, _window("2", "shadow", 1000, {}, 0.002, agreeing=900, rows=1000))
    check = next(c for c in judge(PLAN, True, disagreeing, {}, {}) if c.name == "agreement")
    assert check.result == "fail" and check.value == pytest.approx(0.9)


def test_load_shedding_and_cancellations_are_not_the_candidates_errors() -> None:
    base = _window("1", "primary", 1000, {"UNAVAILABLE": 10}, 0.002)
    shed_codes = {"UNAVAILABLE": 300, "CANCELLED": 200, "RESOURCE_EXHAUSTED": 50}
    shed = _window("2", "primary", 1000, shed_codes, 0.002)
    checks = judge(PLAN, False, _interval(base, shed), {}, {})
    assert _results(checks)["error_rate"] == "pass"
    # ...but a deadline the candidate made callers miss is its own.
    late = _window("2", "primary", 1000, {"DEADLINE_EXCEEDED": 100}, 0.002)
    assert _results(judge(PLAN, False, _interval(base, late), {}, {}))["error_rate"] == "fail"


def test_many_errors_decide_before_the_interval_has_enough_requests() -> None:
    base = _window("1", "primary", 1000, {}, 0.002)
    failing = _window("2", "primary", 60, {"INTERNAL": 30}, 0.002)
    assert _results(judge(PLAN, False, _interval(base, failing), {}, {}))["error_rate"] == "fail"
    one_error = _window("2", "primary", 60, {"INTERNAL": 1}, 0.002)
    result = _results(judge(PLAN, False, _interval(base, one_error), {}, {}))["error_rate"]
    assert result == "insufficient"


def _check(name: str, plan: RolloutPlan, *stats: VersionStats) -> Check:
    return next(c for c in judge(plan, False, _interval(*stats), {}, {}) if c.name == name)


def test_an_error_rate_over_the_limit_by_chance_passes_and_says_it_lacked_data() -> None:
    # 3 errors in 400 is 0.75 points over a clean baseline: over the 0.5 allowed, yet 3
    # errors are what a candidate as good as the baseline's limit also makes, often.
    base = _window("1", "primary", 1000, {}, 0.002)
    check = _check("error_rate", PLAN, base, _window("2", "primary", 400, {"INTERNAL": 3}, 0.002))
    assert check.result == "pass" and check.value == pytest.approx(0.75)
    assert check.interval is not None and check.interval[0] < 0.5 < check.interval[1]
    assert "passed for lack of data: up to +" in check.detail and "at 400 requests" in check.detail
    assert check.to_dict()["interval"] == list(check.interval)


def test_an_error_rate_whose_interval_lies_over_the_limit_fails() -> None:
    base = _window("1", "primary", 1000, {}, 0.002)
    check = _check("error_rate", PLAN, base, _window("2", "primary", 400, {"INTERNAL": 12}, 0.002))
    assert check.result == "fail" and check.interval is not None and check.interval[0] > 0.5
    assert check.detail.startswith("INTERNAL: candidate 12 of 400, baseline 0 of 1000; +3.00 pts [")


def test_no_errors_on_few_requests_passes_for_lack_of_data_and_on_many_plainly() -> None:
    base = _window("1", "primary", 5000, {}, 0.002)
    few = _check("error_rate", PLAN, base, _window("2", "primary", 150, {}, 0.002))
    assert few.result == "pass" and few.detail.startswith("no errors; passed for lack of data")
    many = _check("error_rate", PLAN, base, _window("2", "primary", 5000, {}, 0.002))
    assert (many.result, many.detail) == ("pass", "no errors")


def _latencies(version: str, values: list[float]) -> VersionStats:
    stats = VersionStats(version, "primary")
    for value in values:
        stats.record("OK", value)
    return stats


def test_one_stall_does_not_fail_a_candidate_as_fast_as_the_baseline() -> None:
    # 3 of 200 requests caught in a 50 ms stall make the candidate's p99 50 ms: over the
    # limits, but neither the rank test nor the p99's interval tells it from chance.
    base = _latencies("1", [0.001] * 200)
    stalled = _latencies("2", [0.001] * 197 + [0.05] * 3)
    check = _check("p99_ratio", PLAN, base, stalled)
    assert check.result == "pass" and (check.value or 0) > 10
    assert "passed for lack of data: over the limits, but not shown at 200 and 200" in check.detail


def test_a_far_slower_candidate_fails_on_few_requests_though_both_stalled() -> None:
    # Both sides caught in a stall of 300 ms or more: its p99 is only about 1.3x the
    # baseline's, and that is its slowest request alone; yet every one of its requests is
    # slower, which the rank test sees in 20 of them.
    plan = RolloutPlan("credit", "2", "1", (10, 50, 100), 60.0, min_requests=20)
    base = _latencies("1", [0.0005] * 19 + [0.3])
    slower = _latencies("2", [0.075] * 19 + [0.4])
    check = _check("p99_ratio", plan, base, slower)
    assert check.result == "fail" and 1.2 < (check.value or 0) < 1.5
    assert "rank test p<0.001" in check.detail
