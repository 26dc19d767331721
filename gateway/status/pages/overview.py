"""/status: every model with its rule and weights, its versions' status and its rollout, and
every live replica with the revision it applied and what failed there."""

from __future__ import annotations

from typing import Any

from gateway.status.pages.html import Cell, e, model_href, number, rollout_href, table
from gateway.status.snapshot import ModelSummary, Overview

__all__ = ["overview_body"]


def overview_body(overview: Overview) -> str:
    models = overview.models
    if not models:
        return '<p class="note">No models in the registry yet: gatectl model create.</p>'
    return "".join(
        [
            table(
                "Models",
                [
                    "model",
                    "rule revision",
                    "split (weight)",
                    "shadows",
                    "sticky",
                    "versions",
                    "rollout",
                    "replicas applied",
                ],
                [_model_row(m) for m in models],
            ),
            table(
                "Rollouts",
                [
                    "model",
                    "candidate",
                    "baseline",
                    "status",
                    "step",
                    "candidate weight",
                    "failures",
                    "last decision",
                ],
                [_rollout_row(m, m.rollout) for m in models if m.rollout is not None],
            ),
            table(
                "Replicas",
                ["replica", "model", "applied revision", "working towards", "versions", "problems"],
                [row for m in models for row in _replica_rows(m)],
            ),
        ]
    )


def _model_row(model: ModelSummary) -> list[Cell]:
    link = f'<a href="{e(model_href(model.name))}">{e(model.name)}</a>'
    if model.error:
        return [link, f'<span class="failed">unreadable: {e(model.error)}</span>', *["-"] * 6]
    rule = model.rule
    total = sum(s.weight for s in rule.split) if rule else 0
    split = (
        "-"
        if rule is None
        else ", ".join(
            f"{e(s.version)}={s.weight} ({100.0 * s.weight / total:.0f}%)"
            if total
            else f"{e(s.version)}={s.weight}"
            for s in rule.split
        )
    )
    shadows = (
        "-"
        if rule is None or not rule.shadows
        else ", ".join(f"{e(s.version)} {s.percent:g}%" for s in rule.shadows)
    )
    statuses = (
        "<br>".join(
            f'{e(s.version)}: <span class="{"failed" if s.failed_on else ""}">{e(s.text)}</span>'
            for s in model.statuses
        )
        or "-"
    )
    rollout = "-"
    if model.rollout is not None:
        rollout = (
            f'<a href="{e(rollout_href(model.name))}">{e(model.rollout["status"])}'
            f" ({e(model.rollout['candidate_weight'])}%)</a>"
        )
    revision = None if rule is None else rule.revision
    applied = sum(
        1 for r in model.replicas if revision is not None and r["applied_revision"] == revision
    )
    return [
        link,
        number(revision, "d"),
        split,
        shadows,
        "-" if rule is None else ("yes" if rule.sticky else "no"),
        statuses,
        rollout,
        f"{applied} of {len(model.replicas)}",
    ]


def _rollout_row(model: ModelSummary, view: dict[str, Any]) -> list[Cell]:
    decision = view["last_decision"]
    steps = view["steps"]
    step = "shadow phase" if view["step"] == 0 else f"{view['step']} of {len(steps)}"
    return [
        f'<a href="{e(rollout_href(model.name))}">{e(model.name)}</a>',
        e(view["candidate"]),
        e(view["baseline"]),
        e(view["status"]),
        e(step),
        e(f"{view['candidate_weight']}%"),
        e(f"{view['failures']} of {view['failures_to_rollback']}"),
        e(f"{decision['decision']}: {decision['reason']}") if decision else "-",
    ]


def _replica_rows(model: ModelSummary) -> list[list[Cell]]:
    rows = []
    for r in model.replicas:
        problems = "; ".join(f"{v}: {why}" for v, why in r["failed"].items()) or r["error"]
        states = ", ".join(f"{v['version']} {v['state']}" for v in r["version_states"]) or "-"
        rows.append(
            [
                e(r["replica"]),
                e(model.name),
                number(r["applied_revision"], "d"),
                number(r["target_revision"], "d"),
                e(states),
                f'<span class="failed">{e(problems)}</span>' if problems else "-",
            ]
        )
    return rows
