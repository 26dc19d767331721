"""Pure routing: (table, model, pin) -> the version that serves and why. No I/O."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

from gateway.routing.table import RouteTable

__all__ = ["PIN", "WEIGHT", "Decision", "route"]

PIN = "pin"
WEIGHT = "weight"
_draw = random.Random().random  # per process; only unkeyed traffic uses it


@dataclass(frozen=True, slots=True)
class Decision:
    """The version chosen for a request and how (`routed_by`: pin or weight)."""

    version: str
    routed_by: str


def route(table: RouteTable, model: str, pinned_version: str) -> Decision | None:
    """Choose the version for a request; None when the model has no route."""
    if pinned_version:
        return Decision(pinned_version, PIN)
    active = table.routes.get(model)
    if active is None:
        return None
    if len(active.versions) == 1:
        return Decision(active.versions[0], WEIGHT)
    point = _draw() * active.cumulative_weights[-1]
    index = bisect.bisect_right(active.cumulative_weights, point)
    return Decision(active.versions[index], WEIGHT)
