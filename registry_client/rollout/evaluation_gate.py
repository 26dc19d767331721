"""What `rollout start` checks before a plan with label gates is stored: the model can be
judged on labels at all, and with `--require-evaluation` the candidate's evaluation before
deployment (gatectl evaluate) passes the plan's own thresholds. Each refusal says why and what
to run."""

from __future__ import annotations

from registry_client.client import RegistryClient
from registry_client.errors import Rejected
from registry_client.quality.evaluation import Evaluation
from registry_client.quality.task import QualityConfig
from registry_client.rollout.plan import RolloutPlan
from registry_client.rollout.quality_checks import headline_drop

__all__ = ["refuse_unready_label_gates"]


def refuse_unready_label_gates(client: RegistryClient, plan: RolloutPlan) -> None:
    """Rejected naming the flag and the reason when the plan's label gates cannot work or the
    candidate's evaluation fails them; nothing to check for a plan without them."""
    if not plan.label_gated and not plan.require_evaluation:
        return
    config = client.model_quality(plan.model)
    if config is None:
        raise Rejected(f"model {plan.model!r} has no quality config, which the label gates"
                       f" need: give its task first (gatectl model create {plan.model}"
                       " --task ...)")  # fmt: skip
    if plan.max_fairness_gap is not None and not config.segments:
        raise Rejected(f"max_fairness_gap (--max-fairness-gap): model {plan.model!r} has no"
                       f" segments to judge fairness by (gatectl model create {plan.model}"
                       " --segments ...)")  # fmt: skip
    if plan.require_evaluation:
        _refuse_failing_evaluation(client, plan, config)


def _evaluate_hint(plan: RolloutPlan, version: str) -> str:
    return f"gatectl evaluate {plan.model} {version} --data ... --labels ..."


def _evaluation(client: RegistryClient, plan: RolloutPlan, version: str,
                config: QualityConfig, role: str) -> Evaluation:  # fmt: skip
    found = client.evaluation(plan.model, version)
    if found is None:
        raise Rejected(f"--require-evaluation: the {role} {version} of {plan.model!r} has no"
                       f" evaluation: run {_evaluate_hint(plan, version)} first")  # fmt: skip
    if found.task != config.task:
        raise Rejected(f"--require-evaluation: the {role} {version} was evaluated as a"
                       f" {found.task} model; {plan.model!r} is {config.task} now: run"
                       f" {_evaluate_hint(plan, version)} again")  # fmt: skip
    return found


def _refuse_failing_evaluation(
    client: RegistryClient, plan: RolloutPlan, config: QualityConfig
) -> None:
    candidate = _evaluation(client, plan, plan.candidate, config, "candidate")
    worst = candidate.worst_gap()
    if plan.max_fairness_gap is not None and worst is not None:
        dimension, metric, gap, value = worst
        if gap > plan.max_fairness_gap:
            raise Rejected(f"--require-evaluation: the candidate {plan.candidate}'s evaluation"
                           f" has a fairness gap of {gap:.4g} on {dimension} ({metric}, worst"
                           f" value {value!r}), over --max-fairness-gap"
                           f" {plan.max_fairness_gap:g}")  # fmt: skip
    if plan.max_auc_drop is None:
        return
    baseline = _evaluation(client, plan, plan.baseline, config, "baseline")
    if (candidate.data_sha256, candidate.labels_sha256) != (
        baseline.data_sha256, baseline.labels_sha256
    ):  # fmt: skip
        raise Rejected(f"--max-auc-drop: the candidate {plan.candidate} and the baseline"
                       f" {plan.baseline} were evaluated on different data (data sha256"
                       f" {candidate.data_sha256[:12]} and {baseline.data_sha256[:12]}); evaluate"
                       " both on the same files to compare them")  # fmt: skip
    metric, drop, detail = headline_drop(config.task, candidate.metrics, baseline.metrics)
    if drop is not None and drop > plan.max_auc_drop:
        worse = "relative rise of MAE" if config.task == "regression" else f"drop in {metric}"
        raise Rejected(f"--require-evaluation: the candidate {plan.candidate}'s evaluation is"
                       f" worse than the baseline {plan.baseline}'s by {drop:.4g} ({worse};"
                       f" {detail}), over --max-auc-drop {plan.max_auc_drop:g}")  # fmt: skip
