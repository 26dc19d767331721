"""What a rule write changes, as gatectl shows it before writing (`--dry-run`, `apply`)."""

from __future__ import annotations

from typing import Any

from registry_client.records.rule_documents import RouteRule

__all__ = ["ROUTING_FIELDS", "changes", "routing"]

ROUTING_FIELDS = ("split", "shadows", "sticky")


def routing(rule: RouteRule | None) -> dict[str, Any] | None:
    """The fields that route traffic, as text: split `1=90,2=10`, shadows `3=5%` or `-`."""
    if rule is None:
        return None
    return {
        "split": ",".join(f"{s.version}={s.weight}" for s in rule.split),
        "shadows": ",".join(f"{s.version}={s.percent:g}%" for s in rule.shadows) or "-",
        "sticky": rule.sticky,
    }


def changes(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """`field before -> after` for each routing field that differs (`-` for no rule)."""
    was = before or {}
    return [f"{field} {was.get(field, '-')} -> {after[field]}"
            for field in ROUTING_FIELDS if was.get(field) != after[field]]  # fmt: skip
