"""Rollout gates on labels, pure: the plan's new fields validated naming their flags and loaded
from documents stored before them, each label check passing, failing, waiting and failing once
it has waited its bound, and the decisions that follow (the waiting clock kept or cleared)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import pytest

from gateway.rollout.decisions import Decision, next_decision
from registry_client.quality.report import VersionQuality
from registry_client.rollout.judge import Check
from registry_client.rollout.plan import RolloutPlan, RolloutState
from registry_client.rollout.quality_checks import LabelQuality, headline_drop, label_checks
from registry_client.schema import SchemaError

PLAN = RolloutPlan("credit", "2", "1", (50, 100), 60.0, min_requests=100, max_auc_drop=0.02,
                   max_fairness_gap=0.1, min_label_coverage=0.5, min_labels=100,
                   label_wait_seconds=3600.0)  # fmt: skip
GAP = ("demographic_parity_difference", 0.04, "F")


def _side(version: str, auc: float | None, labelled: float, logged: int) -> VersionQuality:
    return VersionQuality(version, "primary", {"auc_roc": auc}, {}, labelled, logged,
                          labelled / logged if logged else None)  # fmt: skip


Gaps = Mapping[str, tuple[str, float, str] | None]


def _found(candidate_auc: float | None = 0.85, labelled: float = 600, logged: int = 1000,
           gaps: Gaps | None = None, baseline_labelled: float = 800) -> LabelQuality:  # fmt: skip
    return LabelQuality("binary", _side("2", candidate_auc, labelled, logged),
                        _side("1", 0.86, baseline_labelled, 1000),
                        {"gender": GAP} if gaps is None else gaps, {"gender": 2})  # fmt: skip


def _results(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.result for c in checks}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_auc_drop": 1.5}, "max_auc_drop (--max-auc-drop): expected a number from 0 to 1"),
        ({"max_auc_drop": float("nan")}, "max_auc_drop (--max-auc-drop): expected a number"),
        ({"min_label_coverage": 0}, "min_label_coverage (--min-label-coverage): expected more"
                                    " than 0"),
        ({"min_label_coverage": 1.01}, "min_label_coverage (--min-label-coverage): expected a"
                                       " number from 0 to 1"),
        ({"max_fairness_gap": -0.1}, "max_fairness_gap (--max-fairness-gap): expected a number"
                                     " >= 0"),
        ({"max_fairness_gap": float("inf")}, "max_fairness_gap (--max-fairness-gap)"),
        ({"min_labels": 0}, "min_labels (--min-labels): expected an integer from 1 to 10^9"),
        ({"label_wait_seconds": 0.5}, "label_wait_seconds (--label-wait): expected 1s to 90d"),
        ({"label_wait_seconds": 91 * 86400.0}, "label_wait_seconds (--label-wait)"),
        ({"require_evaluation": "yes"}, "require_evaluation (--require-evaluation): expected"
                                        " true or false"),
    ],
)  # fmt: skip
def test_a_label_gate_out_of_range_is_refused_naming_its_flag(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(SchemaError, match=re.escape(message)):
        RolloutPlan(**(PLAN.to_dict() | changes)).validate()


def test_a_document_stored_before_the_label_gates_loads_with_them_off() -> None:
    state = RolloutState(RolloutPlan("credit", "2", "1", (50, 100), 60.0), "progressing", 0,
                         1.0, "alice", 1.0, 3)  # fmt: skip
    doc = json.loads(state.to_json())
    for name in ("require_evaluation", "max_auc_drop", "max_fairness_gap",
                 "min_label_coverage", "min_labels", "label_wait_seconds"):  # fmt: skip
        del doc["plan"][name]
    del doc["labels_waiting_since"]
    loaded = RolloutState.from_json(json.dumps(doc))
    assert loaded == state and not loaded.plan.label_gated
    assert loaded.plan.label_wait_seconds == 3600.0 and loaded.labels_waiting_since == 0.0


def test_the_label_gates_round_trip_in_the_stored_document() -> None:
    state = RolloutState(PLAN, "shadowing", -1, 1.0, "alice", 1.0, 3, labels_waiting_since=9.5)
    assert RolloutState.from_json(state.to_json()) == state
    assert PLAN.label_gated


def test_enough_labels_and_a_good_candidate_pass_every_label_check() -> None:
    checks = label_checks(PLAN, _found(), 0.0)
    assert _results(checks) == {"label_coverage": "pass", "auc_drop": "pass",
                                "fairness_gap": "pass"}  # fmt: skip
    assert not any(c.waits_for_labels for c in checks)
    coverage = checks[0]
    assert coverage.value == 0.6 and coverage.threshold == ">= 0.5 and 100 labels"
    assert coverage.detail == "candidate 600 of 1000 predictions labelled, baseline 800 of 1000"


def test_a_candidate_less_accurate_by_more_than_the_drop_fails_naming_both_aucs() -> None:
    auc = next(c for c in label_checks(PLAN, _found(candidate_auc=0.80), 0.0)
               if c.name == "auc_drop")  # fmt: skip
    assert auc.result == "fail" and auc.value == pytest.approx(0.06)
    assert auc.threshold == "<= 0.02 drop in auc_roc"
    assert auc.detail == "auc_roc: candidate 0.8, baseline 0.86 (600 and 800 labelled)"


def test_an_unfair_candidate_fails_naming_the_dimension_and_worst_value() -> None:
    gaps = {"gender": ("demographic_parity_difference", 0.25, "F"),
            "age_band": ("demographic_parity_difference", 0.05, "18-25")}  # fmt: skip
    fairness = label_checks(PLAN, _found(gaps=gaps), 0.0)[-1]
    assert (fairness.name, fairness.result, fairness.value) == ("fairness_gap", "fail", 0.25)
    assert fairness.detail == "gender: demographic_parity_difference 0.25, worst F; age_band 0.05"


def test_too_little_coverage_waits_and_says_how_long_out_of_the_bound() -> None:
    checks = label_checks(PLAN, _found(labelled=300), 600.0)
    assert _results(checks) == {"label_coverage": "insufficient", "auc_drop": "insufficient",
                                "fairness_gap": "insufficient"}  # fmt: skip
    assert all(c.waits_for_labels for c in checks)
    assert checks[0].detail.endswith("; waited 10m of 1h") and checks[0].value == 0.3
    assert checks[1].detail == "waiting for labels (label_coverage)"


def test_a_baseline_without_enough_labels_makes_the_auc_comparison_wait() -> None:
    assert label_checks(PLAN, _found(baseline_labelled=50), 0.0)[0].result == "insufficient"


def test_after_the_bound_waiting_for_labels_fails() -> None:
    checks = label_checks(PLAN, _found(labelled=300), 3600.0)
    assert _results(checks)["label_coverage"] == "fail" and checks[0].waits_for_labels
    assert checks[0].detail.endswith("waited 1h of 1h")
    assert _results(checks)["auc_drop"] == "insufficient"  # judged once labels are in


def test_a_fairness_gap_needing_more_labels_per_value_waits_then_fails() -> None:
    found = _found(gaps={"gender": None})
    assert label_checks(PLAN, found, 0.0)[-1].result == "insufficient"
    assert label_checks(PLAN, found, 3600.0)[-1].result == "fail"


def test_a_fairness_gap_without_two_segment_values_is_skipped() -> None:
    found = LabelQuality("binary", _side("2", 0.85, 600, 1000), _side("1", 0.86, 800, 1000),
                         {"gender": None}, {"gender": 1})  # fmt: skip
    assert label_checks(PLAN, found, 0.0)[-1].result == "skipped"


def test_a_model_without_a_quality_config_fails_the_label_checks() -> None:
    empty = _side("2", None, 0, 0)
    found = LabelQuality("", empty, empty, problem="model 'credit' has no quality config any more")
    coverage = label_checks(PLAN, found, 0.0)[0]
    assert coverage.result == "fail" and "no quality config" in coverage.detail


def test_only_the_gates_asked_for_are_checked() -> None:
    plan = RolloutPlan("credit", "2", "1", (50,), 60.0, min_label_coverage=0.5, min_labels=10)
    assert _results(label_checks(plan, _found(baseline_labelled=0), 0.0)) == {
        "label_coverage": "pass"}  # fmt: skip


def test_the_headline_metric_is_accuracy_for_multiclass_and_mae_rise_for_regression() -> None:
    metric, drop, _ = headline_drop("multiclass", {"accuracy": 0.7}, {"accuracy": 0.75})
    assert metric == "accuracy" and drop == pytest.approx(0.05)
    metric, rise, _ = headline_drop("regression", {"mae": 1.2}, {"mae": 1.0})
    assert metric == "mae" and rise == pytest.approx(0.2)
    assert headline_drop("binary", {"auc_roc": None}, {"auc_roc": 0.8})[1] is None


def _judged(state: RolloutState, checks: list[Check], now: float) -> Decision:
    return next_decision(state, checks, now, {"window": 1})


def _waiting_check(result: str = "insufficient") -> Check:
    return Check("label_coverage", result, 0.1, ">= 0.5 and 100 labels", "candidate 10 of 100",
                 waits_for_labels=True)  # fmt: skip


def test_waiting_for_labels_holds_and_records_since_when() -> None:
    state = RolloutState(PLAN, "progressing", 0, 1.0, "alice", 1.0, 3, interval_started_at=5.0)
    decision = _judged(state, [Check("requests", "pass", 500, ">= 100", ""), _waiting_check()],
                       100.0)  # fmt: skip
    assert decision.decision == "hold" and decision.after.labels_waiting_since == 100.0
    assert decision.reason.startswith("waiting for labels: label_coverage 0.1 (want >= 0.5")
    assert decision.after.interval_started_at == 5.0  # the interval goes on, as for data
    again = _judged(decision.after, [_waiting_check()], 200.0)
    assert again.after.labels_waiting_since == 100.0  # still since the first


def test_waiting_for_data_and_labels_names_both() -> None:
    state = RolloutState(PLAN, "progressing", 0, 1.0, "alice", 1.0, 3)
    requests = Check("requests", "insufficient", 5, ">= 100", "candidate 5, baseline 9")
    reason = _judged(state, [requests, _waiting_check()], 100.0).reason
    assert reason.startswith("waiting for data: requests 5 (want >= 100;")
    assert "; waiting for labels: label_coverage 0.1" in reason


def test_a_wait_past_its_bound_counts_as_failed_and_keeps_its_clock() -> None:
    state = RolloutState(PLAN, "shadowing", -1, 1.0, "alice", 1.0, 3, labels_waiting_since=50.0)
    held = _judged(state, [_waiting_check("fail")], 4000.0)
    assert held.decision == "hold" and held.after.failures == 1
    assert held.after.labels_waiting_since == 50.0
    rolled = _judged(held.after, [_waiting_check("fail")], 4060.0)
    assert rolled.decision == "rollback" and rolled.after.candidate_weight == 0
    assert "label_coverage 0.1" in rolled.reason


def test_labels_enough_again_clear_the_waiting_clock() -> None:
    state = RolloutState(PLAN, "progressing", 0, 1.0, "alice", 1.0, 3, labels_waiting_since=50.0)
    passed = Check("label_coverage", "pass", 0.6, ">= 0.5", "")
    decision = _judged(state, [passed], 100.0)
    assert decision.decision == "advance" and decision.after.labels_waiting_since == 0.0
