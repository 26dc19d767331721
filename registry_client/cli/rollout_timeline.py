"""A rollout's story as its audit tells it: each entry's state, and the picture of the
candidate's weight over time with each decision (`gatectl rollout status --plot`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from registry_client.charts.figures import Decision, rollout_timeline
from registry_client.client import RegistryClient
from registry_client.rollout.plan import RolloutState
from registry_client.rollout.store import RolloutStore

__all__ = ["audited_state", "timeline_picture"]


def audited_state(after: str) -> dict[str, Any]:
    """An audit entry's `after` as a rollout's audit view; {} when it is not one (an entry
    written by another tool)."""
    try:
        found = json.loads(after) if after else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def timeline_picture(client: RegistryClient, state: RolloutState) -> str:
    """The rollout's decisions since it started, oldest first, as a timeline."""
    decisions = []
    for entry in reversed(RolloutStore(client).history(state.plan.model, 1000)):
        when = entry.get("when", "")
        after = audited_state(entry.get("after", ""))
        at = datetime.fromisoformat(when).timestamp() if when else 0.0
        if at + 1 < state.started_at or "weight" not in after:
            continue  # an earlier rollout's, or not a rollout's state
        action = entry.get("action", "").removeprefix("rollout.")
        decisions.append(Decision(at, action, float(after["weight"]), entry.get("reason", "")))
    plan = state.plan
    title = (f"Rollout of {plan.model} version {plan.candidate} (baseline {plan.baseline}):"
             f" {state.status}")  # fmt: skip
    return rollout_timeline(title, decisions, plan.steps)
