"""Rule changes written with the real RegistryClient.set_route while the fleet runs, and how
long each took to reach every simulated gateway: the hint's arrival, the follower's read of
every rule after it, and the epoch poll that would have found the change had the hint been
lost (bounded by the poll interval, as it only runs that often)."""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.fleet.seed import ACTOR, split_of
from registry_client.client import RegistryClient

__all__ = ["Change", "drive_changes", "percentile", "propagation"]


@dataclass(frozen=True, slots=True)
class Change:
    """One rule write: monotonic times it was sent and returned, and the epoch it made."""

    started: float
    returned: float
    epoch: int


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def drive_changes(
    registry: RegistryClient, workers: Sequence[Connection], model: str, count: int,
    canary_percent: int, timeout: float, rng: random.Random,
) -> tuple[list[Change], int]:  # fmt: skip
    """Write `count` rule changes one after another, each once every gateway has the one
    before and has read the rules after it (or `timeout` passed): a change is not published
    into the simulator's CPU still busy with the last one's reads. Returns the changes and
    how many (change, gateway) hints never came within the timeout."""
    changes: list[Change] = []
    missing = 0
    for index in range(count):
        split = split_of(canary_percent + 10 if index % 2 == 0 else canary_percent)
        started = time.monotonic()
        registry.set_route(model, split, actor=ACTOR, reason=f"fleet change {index}")
        returned = time.monotonic()
        changes.append(Change(started, returned, registry.epoch()))
        for worker in workers:
            worker.send(("await", started, timeout))
        missing += sum(int(worker.recv()) for worker in workers)
        time.sleep(rng.uniform(0.2, 0.6))  # not in step with the gateways' polls
    return changes, missing


def _first_after(times: Sequence[float], start: float, end: float) -> float | None:
    return next((t for t in times if start <= t < end), None)


def propagation(changes: Sequence[Change], gateways: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Delays (ms, from the write being sent) over every (change, gateway) pair."""
    hints: list[float] = []
    reads: list[float] = []
    polls: list[float] = []
    slowest: list[float] = []
    for index, change in enumerate(changes):
        end = changes[index + 1].started if index + 1 < len(changes) else math.inf
        arrived = []
        for gateway in gateways.values():
            hint = _first_after(gateway["hints"], change.started, end)
            if hint is not None:
                arrived.append(hint - change.started)
            read = _first_after(gateway["resyncs"], change.started, end)
            if read is not None:
                reads.append(read - change.started)
            poll = next((t for t, epoch in gateway["polled"]
                         if epoch >= change.epoch and t >= change.started), None)  # fmt: skip
            if poll is not None:
                polls.append(poll - change.started)
        hints += arrived
        if arrived:
            slowest.append(max(arrived))
    return {
        "changes": len(changes),
        "pairs": len(hints),
        "set_route_ms": _ms(statistics.median(c.returned - c.started for c in changes)),
        "hint": _quantiles(hints),
        "slowest_per_change": _quantiles(slowest),
        "rules_read": _quantiles(reads),
        "epoch_poll": _quantiles(polls),
    }


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    return {"p50": _ms(percentile(values, 0.5)), "p99": _ms(percentile(values, 0.99)),
            "max": _ms(max(values)), "n": len(values)}  # fmt: skip


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)
