"""`gatectl rollout start|pause|resume|abort --dry-run`: what the write checked and would
change, in the rollout and in the rule it serves; nothing is written."""

from __future__ import annotations

import json
from typing import Any

from registry_client.cli.context import CommandContext
from registry_client.cli.dry_run import field_changes
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.rule_diff import changes, routing
from registry_client.cli.tables import printable
from registry_client.client import RegistryClient
from registry_client.rollout.plan import RolloutState
from registry_client.rollout.store import RolloutStore
from registry_client.rollout.transactions import served_rule

__all__ = ["rollout_fields", "show_planned_removal", "show_planned_rollout"]


def rollout_fields(state: RolloutState | None) -> dict[str, Any] | None:
    """The fields of a rollout a dry run compares: where it is, not its counters."""
    if state is None:
        return None
    return {"candidate": state.plan.candidate, "baseline": state.plan.baseline,
            "status": state.status, "paused_status": state.paused_status or None,
            "step": state.step + 1, "candidate_weight": state.candidate_weight,
            "failures": state.failures, "route_revision": state.route_revision}  # fmt: skip


def show_planned_rollout(context: CommandContext, planned: RolloutState, *, route: bool) -> int:
    """Print what a rollout write that was checked (and not made) would change: the rollout
    document from what is stored now to `planned`, and with `route` its rule, from the rule
    now to the one `planned` serves. JSON: {"dry_run", "subject", "before", "after",
    "changes", "rule": {"revision", "before", "after", "changes"} or null}."""
    client, model = context.client, planned.plan.model
    was, will = rollout_fields(RolloutStore(client).get(model)), rollout_fields(planned)
    lines = field_changes(was, will)
    rule = _rule_change(client, planned) if route else None
    subject = f"rollout of {model}"
    if context.emit_json:
        shown = {"dry_run": True, "subject": subject, "before": was, "after": will,
                 "changes": lines, "rule": rule}  # fmt: skip
        print(json.dumps(shown), file=context.out)
        return EXIT_OK
    out = context.out
    print(f"{printable(subject)}  (dry run: nothing written)", file=out)
    for line in lines or ["no change"]:
        print(f"  {printable(line)}", file=out)
    if rule is not None:
        print(f"rule of {printable(model)}  revision {rule['from_revision']} -> revision"
              f" {rule['revision']}", file=out)  # fmt: skip
        for line in rule["changes"] or ["no routing change"]:
            print(f"  {printable(line)}", file=out)
    return EXIT_OK


def show_planned_removal(context: CommandContext, model: str) -> int:
    """`rollout abort --dry-run` of an unreadable document: it would be removed."""
    said = (f"would remove the unreadable rollout document of {model}; its rule would stay"
            " as it is  (dry run: nothing written)")  # fmt: skip
    if context.emit_json:
        shown = {"dry_run": True, "subject": f"rollout of {model}", "before": "unreadable",
                 "after": None, "changes": ["document unreadable -> -"], "rule": None}  # fmt: skip
        print(json.dumps(shown), file=context.out)
    else:
        print(printable(said), file=context.out)
    return EXIT_OK


def _rule_change(client: RegistryClient, planned: RolloutState) -> dict[str, Any]:
    """The rule now and the routing `planned` serves over it (at planned.route_revision)."""
    current = client.get_route(planned.plan.model)
    was, will = routing(current), routing(served_rule(planned, current)) or {}
    return {"from_revision": 0 if current is None else current.revision,
            "revision": planned.route_revision, "before": was, "after": will,
            "changes": changes(was, will)}  # fmt: skip
