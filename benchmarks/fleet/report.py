"""The run's tables: medians over rounds per (deployment, N), in Markdown."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

__all__ = ["summarise", "tables"]

TOP_COMMANDS = 8


def _median_of(values: Sequence[Any]) -> Any:
    """Medians of the numeric leaves of like-shaped results; other leaves from the first."""
    first = values[0]
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(v, dict) and k in v for v in values)]
        return {k: _median_of([v[k] for v in values]) for k in keys}
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers and len(numbers) == len(values):
        return statistics.median(numbers)
    return first


def summarise(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary per (kind, replicas): medians over its rounds; lists (top commands,
    shards, census) from its median round by Redis commands a second."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        grouped[run["kind"], run["replicas"]].append(run)
    summaries = []
    for (kind, replicas), found in sorted(grouped.items(), key=lambda item: item[0][1]):
        ordered = sorted(found, key=lambda r: r["redis"]["commands_per_s"])
        middle = ordered[len(ordered) // 2]
        summary = _median_of(found)
        summary["rounds"] = len(found)
        summary["redis"]["top_commands"] = middle["redis"]["top_commands"]
        summary["redis"]["shards"] = middle["redis"]["shards"]
        summary["census"] = middle["census"]
        summary["kind"], summary["replicas"] = kind, replicas
        summaries.append(summary)
    return summaries


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def tables(summaries: Sequence[dict[str, Any]]) -> str:
    """Load, propagation, the simulator's schedule, top commands, shards and memory."""
    lines = ["### Redis load (medians of rounds)", "",
             "| N | Redis | rounds | cmd/s | cmd/s per replica | in kB/s per replica"
             " | out kB/s per replica | Redis CPU, % of a core | per replica, % | used_memory MB"
             " | per replica MB | clients |", "|" + " ---: |" * 12]  # fmt: skip
    for s in summaries:
        r = s["redis"]
        lines.append(
            f"| {s['replicas']} | {s['kind']} | {s['rounds']} | {_f(r['commands_per_s'], 0)}"
            f" | {_f(r['commands_per_s_per_replica'])}"
            f" | {_f(r['in_bytes_per_s_per_replica'] / 1e3)}"
            f" | {_f(r['out_bytes_per_s_per_replica'] / 1e3)} | {_f(100 * r['cpu_share'])}"
            f" | {_f(100 * r['cpu_share_per_replica'], 3)} | {_f(r['used_memory'] / 1e6)}"
            f" | {_f(r['memory_per_replica'] / 1e6, 2)} | {_f(r['clients'], 0)} |"
        )
    lines += ["", "### Rule propagation, ms from set_route sent (medians of rounds)", "",
              "| N | Redis | hint p50 | hint p99 | hint max | slowest per change p50 | p99"
              " | rules read p50 | p99 | epoch poll p50 | p99 | max | set_route | missed |",
              "|" + " ---: |" * 14]  # fmt: skip
    for s in summaries:
        p = s["propagation"]
        hint, slow, read, poll = (
            p["hint"],
            p["slowest_per_change"],
            p["rules_read"],
            p["epoch_poll"],
        )
        lines.append(
            f"| {s['replicas']} | {s['kind']} | {_f(hint['p50'])} | {_f(hint['p99'])}"
            f" | {_f(hint['max'])} | {_f(slow['p50'])} | {_f(slow['p99'])} | {_f(read['p50'])}"
            f" | {_f(read['p99'])} | {_f(poll['p50'], 0)} | {_f(poll['p99'], 0)}"
            f" | {_f(poll['max'], 0)} | {_f(p['set_route_ms'])} | {_f(p['missing'], 0)} |"
        )
    lines += ["", "### Did the simulator keep its schedule? (medians of rounds)", "",
              "| N | Redis | processes | simulator CPU, % of a core | lowest task achieved"
              " | predictions achieved | lag probe p50 ms | p99 ms | load avg |",
              "|" + " ---: |" * 9]  # fmt: skip
    for s in summaries:
        m = s["simulator"]
        lines.append(
            f"| {s['replicas']} | {s['kind']} | {_f(s['processes'], 0)}"
            f" | {_f(100 * m['cpu_share'])}"
            f" | {_f(m['achieved_min'], 2)} | {_f(m['predictions_achieved'], 2)}"
            f" | {_f(m['lag_p50_ms'], 2)} | {_f(m['lag_p99_ms'], 1)} | {_f(s['load_after'])} |"
        )
    for s in summaries:
        lines += ["", f"#### N={s['replicas']}, {s['kind']}: tasks achieved (runs / intended),"
                  " lateness p99 ms", ""]  # fmt: skip
        lines.append(", ".join(
            f"{kind} {_f(t['achieved'], 2)} ({_f(t['late_p99_ms'], 0)})"
            for kind, t in s["simulator"]["tasks"].items()
        ))  # fmt: skip
        commands = s["redis"]["top_commands"]
        ranked = [c for c in commands if c["usec_share"] is not None][:TOP_COMMANDS]
        lines += ["", "top commands by Redis time: " + "; ".join(
            f"{c['command']} {_f(100 * c['usec_share'], 0)}% ({_f(c['calls_per_s'], 0)}/s,"
            f" {_f(c['usec_per_call'], 1)} us)" for c in ranked
        ) + "".join(
            f"; exec {_f(c['calls_per_s'], 0)}/s, {_f(c['usec_per_call'], 1)} us a call with"
            " the commands it ran" for c in commands if c["command"] == "exec"
        )]  # fmt: skip
        if len(s["redis"]["shards"]) > 1:
            lines += ["", "shards: " + "; ".join(
                f"CPU {_f(100 * sh['cpu_share'])}%, {_f(sh['commands_per_s'], 0)} cmd/s,"
                f" {_f(sh['used_memory'] / 1e6)} MB" for sh in s["redis"]["shards"]
            )]  # fmt: skip
        lines += ["", "memory by kind (sampled): " + "; ".join(
            f"{kind} {_f(c['bytes'] / 1e6)} MB in {c['keys']:,} keys"
            + (f" ({c['bytes_per_replica_field']:,} B per replica field)"
               if "bytes_per_replica_field" in c else "")
            for kind, c in s["census"].items()
        )]  # fmt: skip
        if "prediction_bytes" in s:
            lines += ["", f"bytes per stored prediction, full buckets: {_f(s['prediction_bytes'])}"]
    return "\n".join(lines) + "\n"
