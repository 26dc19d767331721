"""The figures of one measured interval: Redis's load from two INFO snapshots of every node
(summed over a Cluster's shards, and per shard), and how well the simulator kept its
schedule, from two marks of every simulator process."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.fleet.changes import percentile
from benchmarks.fleet.deployments import NodeInfo
from benchmarks.fleet.schedule import KindCounters

__all__ = ["redis_figures", "simulator_figures"]


def redis_figures(
    baseline: Sequence[NodeInfo], before: Sequence[NodeInfo], after: Sequence[NodeInfo],
    seconds: float, replicas: int,
) -> dict[str, Any]:  # fmt: skip
    """Rates over the interval, memory at its end, per replica and in total."""
    commands = sum(a.processed - b.processed for a, b in zip(after, before, strict=True))
    net_in = sum(a.net_in - b.net_in for a, b in zip(after, before, strict=True))
    net_out = sum(a.net_out - b.net_out for a, b in zip(after, before, strict=True))
    cpu = sum(a.cpu_seconds - b.cpu_seconds for a, b in zip(after, before, strict=True))
    memory = sum(a.used_memory for a in after)
    grown = memory - sum(b.used_memory for b in baseline)
    growth = memory - sum(b.used_memory for b in before)
    return {
        "commands_per_s": commands / seconds,
        "commands_per_s_per_replica": commands / seconds / replicas,
        "in_bytes_per_s_per_replica": net_in / seconds / replicas,
        "out_bytes_per_s_per_replica": net_out / seconds / replicas,
        "in_bytes_per_s": net_in / seconds,
        "out_bytes_per_s": net_out / seconds,
        "cpu_share": cpu / seconds,  # of one core
        "cpu_share_per_replica": cpu / seconds / replicas,
        "used_memory": memory,
        "memory_per_replica": grown / replicas,
        "memory_growth_per_s": growth / seconds,
        "memory_growth_per_s_per_replica": growth / seconds / replicas,
        "clients": sum(a.clients for a in after),
        "keys": sum(a.keys for a in after),
        "top_commands": _top_commands(before, after, seconds),
        "shards": [
            {
                "port": a.port,
                "cpu_share": (a.cpu_seconds - b.cpu_seconds) / seconds,
                "commands_per_s": (a.processed - b.processed) / seconds,
                "used_memory": a.used_memory,
                "clients": a.clients,
            }
            for a, b in zip(after, before, strict=True)
        ],
    }


def _top_commands(
    before: Sequence[NodeInfo], after: Sequence[NodeInfo], seconds: float
) -> list[dict[str, Any]]:
    """Every command by its share of Redis's time in commands, most first. EXEC's time holds
    the time of the commands it ran, which are counted on their own as well: it is left out
    of the total the shares are of, and listed with its inclusive time per call."""
    calls: dict[str, int] = defaultdict(int)
    usec: dict[str, int] = defaultdict(int)
    for b, a in zip(before, after, strict=True):
        for name, (count, spent) in a.commands.items():
            was = b.commands.get(name, (0, 0))
            calls[name] += count - was[0]
            usec[name] += spent - was[1]
    total = sum(spent for name, spent in usec.items() if name != "exec") or 1
    ranked = sorted(usec, key=lambda name: usec[name], reverse=True)
    return [
        {"command": name, "calls_per_s": calls[name] / seconds,
         "usec_share": None if name == "exec" else usec[name] / total,
         "usec_per_call": usec[name] / max(calls[name], 1)}
        for name in ranked if calls[name] > 0
    ]  # fmt: skip


def simulator_figures(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]],
    periods: Mapping[str, float], replicas: int, predictions_per_s: float,
) -> dict[str, Any]:  # fmt: skip
    """Runs achieved against intended per kind of task, their lateness, the predictions
    written against those due, the simulator's CPU and its lag probe."""
    seconds = sum(a["at"] - b["at"] for a, b in zip(after, before, strict=True)) / len(after)
    runs: dict[str, int] = defaultdict(int)
    cpus: dict[str, float] = defaultdict(float)
    late: dict[str, list[float]] = defaultdict(list)
    for b, a in zip(before, after, strict=True):
        for kind, counters in a["tasks"].items():
            was: KindCounters = b["tasks"].get(kind, KindCounters())
            runs[kind] += counters.runs - was.runs
            cpus[kind] += counters.cpu_seconds - was.cpu_seconds
            late[kind] += counters.lateness[len(was.lateness) :]
    lags = [lag for b, a in zip(before, after, strict=True) for lag in a["lags"][len(b["lags"]) :]]
    predictions = sum(a["predictions"] - b["predictions"] for a, b in zip(after, before,
                                                                          strict=True))  # fmt: skip
    cpu = sum(a["cpu_seconds"] - b["cpu_seconds"] for a, b in zip(after, before, strict=True))
    tasks = {
        kind: {"achieved": runs[kind] / (replicas * seconds / period),
               "cpu_ms_per_run": 1e3 * cpus[kind] / max(runs[kind], 1),
               "cpu_share": cpus[kind] / seconds,
               "late_p50_ms": 1e3 * percentile(late[kind], 0.5) if late[kind] else None,
               "late_p99_ms": 1e3 * percentile(late[kind], 0.99) if late[kind] else None}
        for kind, period in periods.items()
    }  # fmt: skip
    return {
        "tasks": tasks,
        "achieved_min": min(t["achieved"] for t in tasks.values()),
        "predictions_achieved": (
            predictions / (predictions_per_s * replicas * seconds) if predictions_per_s else None
        ),
        "cpu_share": cpu / seconds,
        "lag_p50_ms": 1e3 * percentile(lags, 0.5) if lags else None,
        "lag_p99_ms": 1e3 * percentile(lags, 0.99) if lags else None,
    }
