"""The immutable route table a request reads, and the holder background work swaps it in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

__all__ = ["BUCKETS", "Route", "RouteSource", "RouteTable", "RouteTableHolder"]


BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class Route:
    """One model's active rule: versions with positive weights, in rule order.

    For sticky routing each version owns a consecutive range of the 10,000 buckets, in rule
    order: raising the last version's weight only moves buckets into it."""

    versions: tuple[str, ...]
    cumulative_weights: tuple[int, ...]  # running sums, the last is the total
    revision: int = 0
    sticky: bool = True
    bucket_bounds: tuple[int, ...] = ()  # exclusive upper bucket of each version
    shadows: tuple[tuple[str, float], ...] = ()  # (version, percent of requests mirrored)

    @classmethod
    def of(
        cls,
        split: tuple[tuple[str, int], ...],
        revision: int = 0,
        sticky: bool = True,
        shadows: tuple[tuple[str, float], ...] = (),
    ) -> Route:
        """Build from (version, weight) pairs; versions with weight 0 receive nothing."""
        versions, sums, total = [], [], 0
        for version, weight in split:
            if weight > 0:
                total += weight
                versions.append(version)
                sums.append(total)
        if not versions:
            raise ValueError("a route needs a version with a positive weight")
        bounds = tuple(running * BUCKETS // total for running in sums)
        mirrored = tuple((v, p) for v, p in shadows if p > 0)
        return cls(tuple(versions), tuple(sums), revision, sticky, bounds, mirrored)

    @property
    def weights(self) -> dict[str, int]:
        """Each served version's weight."""
        previous = (0, *self.cumulative_weights[:-1])
        return {
            v: total - before
            for v, total, before in zip(
                self.versions, self.cumulative_weights, previous, strict=True
            )
        }


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Each model's active route. Never mutated: replaced whole."""

    routes: Mapping[str, Route] = field(default_factory=lambda: MappingProxyType({}))


class RouteSource(Protocol):
    """Where requests get the current route table; reading it never blocks."""

    def current(self) -> RouteTable: ...


class RouteTableHolder:
    """A RouteSource whose table is replaced by its owner (repository load, rule watcher)."""

    def __init__(self, table: RouteTable | None = None) -> None:
        self._table = table or RouteTable()

    def current(self) -> RouteTable:
        """The table in force; a plain attribute read, atomic under the GIL."""
        return self._table

    def replace(self, table: RouteTable) -> None:
        """Swap in a new table; requests already routed keep the old one."""
        self._table = table
