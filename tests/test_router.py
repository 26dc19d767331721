"""The pure router: pins, weighted shares, zero weights."""

from __future__ import annotations

from collections import Counter
from types import MappingProxyType

import pytest

from gateway.routing.router import Decision, route
from gateway.routing.table import Route, RouteTable


def _table(*split: tuple[str, int]) -> RouteTable:
    return RouteTable(MappingProxyType({"m": Route.of(split)}))


def _chosen(table: RouteTable, pin: str = "") -> Decision:
    decision = route(table, "m", pin)
    assert decision is not None
    return decision


def test_pin_bypasses_the_split():
    decision = _chosen(_table(("1", 100)), "7")
    assert (decision.version, decision.routed_by) == ("7", "pin")


def test_model_without_route_has_no_decision():
    assert route(_table(("1", 100)), "other", "") is None


def test_unkeyed_shares_follow_the_weights_within_one_point():
    table = _table(("1", 70), ("2", 20), ("3", 10))
    counts = Counter(_chosen(table).version for _ in range(100_000))
    shares = {v: counts[v] / 100_000 for v in ("1", "2", "3")}
    assert shares == pytest.approx({"1": 0.70, "2": 0.20, "3": 0.10}, abs=0.01)


def test_weight_zero_sends_nothing():
    table = _table(("1", 0), ("2", 5))
    assert {_chosen(table).version for _ in range(2_000)} == {"2"}


def test_weights_are_recovered_from_the_route():
    assert Route.of((("1", 90), ("2", 0), ("3", 10))).weights == {"1": 90, "3": 10}
