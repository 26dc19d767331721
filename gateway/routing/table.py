"""The immutable route table a request reads, and the holder background work swaps it in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

__all__ = ["RouteSource", "RouteTable", "RouteTableHolder"]


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Which version serves each model's unpinned requests. Never mutated: replaced whole."""

    defaults: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    revision: int = 0


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
