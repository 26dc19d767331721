"""A version's whole record, as `gatectl version show` prints it for a reviewer or an auditor:
what it is (artifact, signature, ONNX facts), where it came from (card, lineage), how it
measured (metrics over time, the evaluation), and where it has been deployed since when (its
status now and every change of its place in the rule, from the audit)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from registry_client.client import RegistryClient
from registry_client.records.rule_documents import RouteRule
from registry_client.schema import SchemaError
from registry_client.versions.lineage import lineage_chain
from registry_client.versions.status import concerns_version, place_in, read_statuses

__all__ = ["deployment_history", "version_record"]

# The version's own audit entries besides rule changes.
_OWN_ACTIONS = ("version.register", "version.retire", "version.unretire", "version.metrics",
                "version.evaluation")  # fmt: skip


def version_record(client: RegistryClient, model: str, version: str) -> dict[str, Any]:
    """Everything the registry knows of one version; NotFound when it is not registered."""
    fields = client.show_version(model, version)
    status = next(s for s in read_statuses(client, model) if s.version == version)
    evaluation = client.evaluation(model, version)
    return {
        "model": model,
        "version": version,
        "status": status.as_dict(),
        "description": fields.get("description", ""),
        "tags": [t for t in fields.get("tags", "").split(",") if t],
        "artifact": _artifact(fields),
        "onnx": _json(fields, "onnx"),
        "signature": _json(fields, "signature"),
        "feature_names": _json(fields, "feature_names"),
        "card": _json(fields, "card"),
        "lineage": lineage_chain(client.show_version, model, version),
        "metrics": client.metrics_history(model, version),
        "evaluation": None if evaluation is None else json.loads(evaluation.to_json()),
        "history": deployment_history(client.audit_entries(model), version),
    }


def _artifact(fields: Mapping[str, str]) -> dict[str, Any]:
    return {"uri": fields.get("artifact_uri", ""), "sha256": fields.get("sha256", ""),
            "bytes": int(fields.get("size") or 0), "registered_by": fields.get("created_by", ""),
            "registered_at": fields.get("created_at", "")}  # fmt: skip


def deployment_history(audit: Iterable[Mapping[str, str]], version: str) -> list[dict[str, Any]]:
    """The version's own audit entries and each rule change that moved it, oldest first:
    when, who, action, its place after (`split 10`, `shadow 30`, `-` for none), reason."""
    entries = list(audit)  # newest first
    history: list[dict[str, Any]] = []
    previous = "-"
    for entry in reversed(entries):
        action = entry.get("action", "")
        if action.startswith("route."):
            try:
                rule = RouteRule.from_json(entry.get("after", ""))
            except SchemaError:
                continue
            kind, weight = place_in(version, rule)
            place = "-" if kind == "absent" else f"{kind} {weight:g}"
            if place == previous:
                continue
            previous = place
            history.append(_row(entry, place, f"revision {rule.revision}"))
        elif action in _OWN_ACTIONS and concerns_version(entry, version):
            history.append(_row(entry, previous, ""))
    return history


def _row(entry: Mapping[str, str], place: str, rule: str) -> dict[str, Any]:
    return {"when": entry.get("when", ""), "who": entry.get("who", ""),
            "action": entry.get("action", ""), "place": place, "rule": rule,
            "reason": entry.get("reason", "")}  # fmt: skip


def _json(fields: Mapping[str, str], name: str) -> Any:
    """A stored JSON field; None when absent (registered before the field existed, or not
    given) or unreadable (shown as such rather than failing the whole record)."""
    raw = fields.get(name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"unreadable": raw[:200]}
