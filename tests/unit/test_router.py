"""The pure router: pins, weighted shares, zero weights."""

from __future__ import annotations

import os
import subprocess
import sys
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


def test_same_key_same_version_across_processes():
    # Separate interpreters get different hash() seeds; bucket_of must not depend on them.
    script = (
        "from gateway.routing.router import bucket_of;"
        " print([bucket_of('m', f'k{i}') for i in range(50)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(outputs) == 1


def test_keyed_requests_are_sticky_and_say_so():
    table = _table(("1", 50), ("2", 50))
    decisions = {route(table, "m", "", "customer-42") for _ in range(100)}
    assert len(decisions) == 1
    assert next(iter(decisions)).routed_by == "sticky"  # type: ignore[union-attr]


def test_keyed_shares_follow_the_weights():
    table = _table(("1", 80), ("2", 20))
    counts = Counter(_chosen_keyed(table, f"user-{i}").version for i in range(20_000))
    assert counts["2"] / 20_000 == pytest.approx(0.20, abs=0.015)


def test_growing_canary_only_gains_keys():
    keys = [f"user-{i}" for i in range(10_000)]
    previous: set[str] = set()
    for canary in (10, 20, 50):
        table = _table(("1", 100 - canary), ("2", canary))
        in_canary = {k for k in keys if _chosen_keyed(table, k).version == "2"}
        assert previous <= in_canary  # no key leaves the canary as it grows
        previous = in_canary
    assert len(previous) / len(keys) == pytest.approx(0.50, abs=0.02)


def test_non_sticky_rule_ignores_the_key():
    table = RouteTable(MappingProxyType({"m": Route.of((("1", 50), ("2", 50)), sticky=False)}))
    seen = {_chosen_keyed(table, "same-key").version for _ in range(200)}
    assert seen == {"1", "2"}


def _chosen_keyed(table: RouteTable, key: str) -> Decision:
    decision = route(table, "m", "", key)
    assert decision is not None
    return decision
