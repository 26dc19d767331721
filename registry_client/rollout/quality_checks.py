"""The rollout checks on real labels: the candidate's accuracy against the baseline's
(`auc_drop`), its fairness across each segment dimension (`fairness_gap`) and how many of its
predictions have labels yet (`label_coverage`).

The window is every prediction made since the current phase began (its first minute on), not
the judged interval: labels come minutes to days after their predictions, so an interval's own
predictions are mostly unlabelled when it is judged. Coverage over that window grows as labels
arrive; until it reaches the plan's `min_label_coverage` and both sides have `min_labels`
labelled predictions, the label checks wait (`insufficient`, `waits_for_labels`), and after
`label_wait_seconds` of waiting they fail. The candidate is judged on its shadow predictions
while shadowing and on those it answered once it serves; the baseline on those it answered in
the same minutes, or since the rollout began once the candidate serves everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from registry_client.client import RegistryClient
from registry_client.errors import Rejected
from registry_client.quality.headline import COMPARED
from registry_client.quality.metrics import Metrics
from registry_client.quality.offline import MIN_SEGMENT_ROWS
from registry_client.quality.report import VersionQuality, read_range
from registry_client.rollout.judge import FAIL, INSUFFICIENT, PASS, SKIPPED, Check
from registry_client.rollout.plan import SHADOWING, RolloutPlan, RolloutState

__all__ = [
    "AUC_DROP",
    "FAIRNESS_GAP",
    "LABEL_COVERAGE",
    "LabelQuality",
    "headline_drop",
    "label_checks",
    "read_label_quality",
]

AUC_DROP, FAIRNESS_GAP, LABEL_COVERAGE = "auc_drop", "fairness_gap", "label_coverage"
PRIMARY, SHADOW = "primary", "shadow"


@dataclass(frozen=True, slots=True)
class LabelQuality:
    """What one judgement read of the versions' quality on labels. `problem`: why it could not
    be read (the model's quality config is gone or unreadable)."""

    task: str
    candidate: VersionQuality
    baseline: VersionQuality
    # per segment dimension: the candidate's (metric, gap, worst value), None without two
    # values of enough labels; and how many values it has labels for at all
    gaps: Mapping[str, tuple[str, float, str] | None] = field(default_factory=dict)
    values: Mapping[str, int] = field(default_factory=dict)
    problem: str = ""


def _min_segment_rows(plan: RolloutPlan) -> float:
    return float(min(MIN_SEGMENT_ROWS, plan.min_labels))


def read_label_quality(client: RegistryClient, state: RolloutState, now: float) -> LabelQuality:
    """Read both versions' quality over the window the module docstring describes (Redis reads:
    the controller's background thread only). Unreachable when Redis does not answer."""
    plan = state.plan
    role = SHADOW if state.status == SHADOWING else PRIMARY
    empty = VersionQuality(plan.candidate, role, {}, {}, 0.0, 0, None)
    try:
        config = client.model_quality(plan.model)
    except Rejected as exc:
        return LabelQuality("", empty, empty, problem=str(exc))
    if config is None:
        return LabelQuality("", empty, empty, problem=f"model {plan.model!r} has no quality"
                            " config any more")  # fmt: skip
    last = int(now // 60)
    window = read_range(client.quality, client.predictions, plan.model,
                        int(state.phase_started_at // 60), last)  # fmt: skip
    baseline_window = window
    if state.candidate_weight == 100:  # the baseline serves nothing in this phase
        baseline_window = read_range(client.quality, client.predictions, plan.model,
                                     int(state.started_at // 60), last)  # fmt: skip
    rows = _min_segment_rows(plan)
    return LabelQuality(
        task=config.task,
        candidate=window.quality(plan.candidate, role),
        baseline=baseline_window.quality(plan.baseline, PRIMARY),
        gaps={d: window.fairness_gap(plan.candidate, role, d, rows) for d in config.segments},
        values={d: len(window.segments(plan.candidate, role, d)) for d in config.segments},
    )  # fmt: skip


def label_checks(plan: RolloutPlan, found: LabelQuality, waited_seconds: float) -> list[Check]:
    """The label checks the plan asks for; `waited_seconds`: how long the rollout has waited
    for labels so far (0 at the first judgement short of them)."""
    coverage = _coverage(plan, found, waited_seconds)
    checks = [coverage]
    pending = "waiting for labels (label_coverage)"
    if plan.max_auc_drop is not None:
        threshold = _drop_threshold(found.task, plan.max_auc_drop)
        waiting = Check(AUC_DROP, INSUFFICIENT, None, threshold, pending, True)
        ready = coverage.result == PASS
        checks.append(_bounded(plan, _auc_drop(plan, found), waited_seconds) if ready else waiting)
    if plan.max_fairness_gap is not None:
        waiting = Check(FAIRNESS_GAP, INSUFFICIENT, None, f"<= {plan.max_fairness_gap:g}",
                        pending, True)  # fmt: skip
        ready = coverage.result == PASS
        checks.append(_bounded(plan, _fairness(plan, found), waited_seconds) if ready else waiting)
    return checks


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 3600 else f"{seconds / 3600:.3g}h"


def _bounded(plan: RolloutPlan, check: Check, waited: float) -> Check:
    """A check still short of labels fails once the rollout has waited the plan's bound."""
    if check.result != INSUFFICIENT:
        return check
    bound = plan.label_wait_seconds
    result = FAIL if waited >= bound else INSUFFICIENT
    detail = f"{check.detail}; waited {_duration(waited)} of {_duration(bound)}"
    return Check(check.name, result, check.value, check.threshold, detail, True)


def _coverage(plan: RolloutPlan, found: LabelQuality, waited: float) -> Check:
    wanted = plan.min_label_coverage or 0.0
    threshold = (f">= {wanted:g} and " if wanted else ">= ") + f"{plan.min_labels} labels"
    if found.problem:
        return Check(LABEL_COVERAGE, FAIL, None, threshold, found.problem, True)
    candidate, baseline = found.candidate, found.baseline
    detail = (f"candidate {candidate.labelled:g} of {candidate.logged} predictions labelled,"
              f" baseline {baseline.labelled:g} of {baseline.logged}")  # fmt: skip
    short = candidate.labelled < plan.min_labels or (
        wanted > 0 and (candidate.coverage is None or candidate.coverage < wanted)
    )
    if plan.max_auc_drop is not None:  # compared with the baseline: it needs labels too
        short = short or baseline.labelled < plan.min_labels
    result = INSUFFICIENT if short else PASS
    return _bounded(plan, Check(LABEL_COVERAGE, result, candidate.coverage, threshold, detail,
                                short), waited)  # fmt: skip


def _drop_threshold(task: str, most: float) -> str:
    if task == "regression":
        return f"<= {most:g} relative MAE rise"
    return f"<= {most:g} drop in {COMPARED.get(task, 'auc_roc')}"


def headline_drop(
    task: str, candidate: Metrics, baseline: Metrics
) -> tuple[str, float | None, str]:
    """(metric, how much worse the candidate is, detail): the drop of auc_roc (binary) or
    accuracy (multiclass), the relative rise of MAE (regression); None when a side has no
    value (labels of one class only)."""
    metric = COMPARED[task]
    ours, theirs = candidate.get(metric), baseline.get(metric)
    if ours is None or theirs is None:
        return metric, None, f"{metric} undefined on the labels so far (one class only?)"
    detail = f"{metric}: candidate {ours:.4g}, baseline {theirs:.4g}"
    if task != "regression":
        return metric, theirs - ours, detail
    if theirs > 0:
        return metric, (ours - theirs) / theirs, detail
    return metric, 0.0 if ours == 0 else float("inf"), detail


def _auc_drop(plan: RolloutPlan, found: LabelQuality) -> Check:
    assert plan.max_auc_drop is not None  # label_checks asks for this check only then
    threshold = _drop_threshold(found.task, plan.max_auc_drop)
    _, drop, detail = headline_drop(found.task, found.candidate.metrics, found.baseline.metrics)
    detail += (f" ({found.candidate.labelled:g} and {found.baseline.labelled:g} labelled)"
               if drop is not None else "")  # fmt: skip
    if drop is None:
        return Check(AUC_DROP, INSUFFICIENT, None, threshold, detail)
    result = FAIL if drop > plan.max_auc_drop else PASS
    return Check(AUC_DROP, result, drop if drop != float("inf") else None, threshold, detail)


def _fairness(plan: RolloutPlan, found: LabelQuality) -> Check:
    assert plan.max_fairness_gap is not None  # label_checks asks for this check only then
    threshold = f"<= {plan.max_fairness_gap:g}"
    measured = {d: gap for d, gap in found.gaps.items() if gap is not None}
    if not measured:
        rows = _min_segment_rows(plan)
        if any(count >= 2 for count in found.values.values()):
            return Check(FAIRNESS_GAP, INSUFFICIENT, None, threshold,
                         f"fewer than two segment values with {rows:g} labels each")  # fmt: skip
        return Check(FAIRNESS_GAP, SKIPPED, None, threshold,
                     "no segment dimension has two values in the labelled predictions")  # fmt: skip
    ranked = sorted(measured.items(), key=lambda item: -item[1][1])
    dimension, (metric, gap, worst) = ranked[0]
    detail = f"{dimension}: {metric} {gap:.4g}, worst {worst}"
    if len(ranked) > 1:
        detail += "; " + ", ".join(f"{d} {g:.4g}" for d, (_, g, _) in ranked[1:])
    result = FAIL if gap > plan.max_fairness_gap else PASS
    return Check(FAIRNESS_GAP, result, gap, threshold, detail)
