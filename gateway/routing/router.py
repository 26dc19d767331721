"""Pure routing: (table, model, pin) -> the version that serves and why. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.routing.table import RouteTable

__all__ = ["PIN", "WEIGHT", "Decision", "route"]

PIN = "pin"
WEIGHT = "weight"


@dataclass(frozen=True, slots=True)
class Decision:
    """The version chosen for a request and how (`routed_by`: pin or weight)."""

    version: str
    routed_by: str


def route(table: RouteTable, model: str, pinned_version: str) -> Decision | None:
    """Choose the version for a request; None when the model has no route."""
    if pinned_version:
        return Decision(pinned_version, PIN)
    version = table.defaults.get(model)
    if version is None:
        return None
    return Decision(version, WEIGHT)
