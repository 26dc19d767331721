"""Pure routing: (table, model, pin) -> the version that serves and why. No I/O."""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass

from gateway.routing.table import BUCKETS, RouteTable

__all__ = ["PIN", "STICKY", "WEIGHT", "Decision", "bucket_of", "route"]

PIN = "pin"
STICKY = "sticky"
WEIGHT = "weight"
_draw = random.Random().random  # per process; only unkeyed traffic uses it


@dataclass(frozen=True, slots=True)
class Decision:
    """The version chosen for a request and how (`routed_by`: pin, sticky or weight), under
    which revision of the model's rule (None: the model has no route; a pinned request
    counts under the revision in force when it came)."""

    version: str
    routed_by: str
    shadows: tuple[str, ...] = ()  # shadow versions this request is mirrored to
    revision: int | None = None


def bucket_of(model: str, routing_key: str) -> int:
    """The key's bucket: the same on every replica and process (never Python's hash())."""
    digest = hashlib.blake2b(f"{model}\0{routing_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def route(
    table: RouteTable, model: str, pinned_version: str, routing_key: str | None = None
) -> Decision | None:
    """Choose the version for a request; None when the model has no route."""
    active = table.routes.get(model)
    if pinned_version:
        return Decision(pinned_version, PIN, (), None if active is None else active.revision)
    if active is None:
        return None
    revision = active.revision
    if routing_key and active.sticky:
        bucket = bucket_of(model, routing_key)
        index = bisect.bisect_right(active.bucket_bounds, bucket)
        return Decision(active.versions[index], STICKY, _mirrors(active.shadows, bucket),
                        revision)  # fmt: skip
    shadows = _mirrors(active.shadows, None) if active.shadows else ()
    if len(active.versions) == 1:
        return Decision(active.versions[0], WEIGHT, shadows, revision)
    point = _draw() * active.cumulative_weights[-1]
    index = bisect.bisect_right(active.cumulative_weights, point)
    return Decision(active.versions[index], WEIGHT, shadows, revision)


def _mirrors(shadows: tuple[tuple[str, float], ...], bucket: int | None) -> tuple[str, ...]:
    """The shadows a request goes to: by the key's bucket when keyed, else at random."""
    if not shadows:
        return ()
    if bucket is None:
        return tuple(v for v, percent in shadows if _draw() * 100 < percent)
    return tuple(v for v, percent in shadows if bucket < percent * BUCKETS / 100)
