"""Medians and ratios over a driver's rounds: each variant's median, and the ratio of two
variants measured in the same round, with the median of those ratios. A ratio within a round
compares two variants under the same load on the shared machine; medians resist the rounds a
neighbour's burst of work spoilt."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from load_tools import Run


def median_of(values: Sequence[float | None]) -> float | None:
    """Median of the values present, or None."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def paired_ratios(bottoms: Sequence[float], tops: Sequence[float]) -> list[float]:
    """top / bottom of each round: the two lists hold the same rounds in the same order."""
    return [top / bottom for bottom, top in zip(bottoms, tops, strict=True)]


def medians_of(items: Sequence[object], *fields: str) -> dict[str, Any]:
    """{"n": how many, field: median of the field's values present, ...}."""
    return {"n": len(items), **{f: median_of([getattr(i, f) for i in items]) for f in fields}}


def ratio_of(got: Mapping[str, object], top: str, bottom: str, what: str) -> float | None:
    """got[top].what / got[bottom].what, or None when either is missing."""
    if top not in got or bottom not in got:
        return None
    upper, lower = getattr(got[top], what), getattr(got[bottom], what)
    return None if upper is None or not lower else float(upper / lower)


def round_ratios(
    measured: Sequence[Any],
    variant: str,
    wanted: Mapping[str, tuple[str, str, str]],
    order: Callable[[int], str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    """Ratios within each round, and their medians over the rounds.

    `measured` holds results with .round (1-based), .rps and the attribute `variant` naming
    the variant; `wanted` maps a ratio's name to (top variant, bottom variant, attribute).
    Each round's row has its number, order(round - 1) when given, and every wanted ratio
    (None when a side has no result in that round)."""
    rounds: list[dict[str, Any]] = []
    for rnd in sorted({m.round for m in measured}):
        got = {getattr(m, variant): m for m in measured if m.round == rnd and m.rps is not None}
        ratios = {name: ratio_of(got, *spec) for name, spec in wanted.items()}
        shown = {} if order is None else {"order": order(rnd - 1)}
        rounds.append({"round": rnd, **shown, **ratios})
    return rounds, {name: median_of([r[name] for r in rounds]) for name in wanted}


def run_medians(runs: list[Run]) -> list[dict[str, Any]]:
    """Median req/s, p50 and p99 per (tool, server, concurrency), with the ratio to bare."""
    groups: dict[tuple[str, str, int], list[Run]] = {}
    for run in runs:
        if run.rps is not None:
            groups.setdefault((run.tool, run.server, run.concurrency), []).append(run)
    rows: list[dict[str, Any]] = [
        {
            "tool": tool,
            "server": server,
            "concurrency": conc,
            "n": len(group),
            "rps": statistics.median(r.rps for r in group if r.rps is not None),
            "p50_ms": statistics.median(r.p50_ms for r in group if r.p50_ms is not None),
            "p99_ms": statistics.median(r.p99_ms for r in group if r.p99_ms is not None),
        }
        for (tool, server, conc), group in groups.items()
    ]
    bare = {(r.tool, r.concurrency, r.repeat): r for r in runs if r.server == "bare" and r.rps}
    for row in rows:
        ratios = [
            r.rps / base.rps
            for r in runs
            if (r.tool, r.server, r.concurrency) == (row["tool"], row["server"], row["concurrency"])
            and r.rps
            and (base := bare.get((r.tool, r.concurrency, r.repeat))) is not None
            and base.rps
        ]
        row["vs_bare"] = round(statistics.median(ratios), 3) if ratios else None
        row["vs_bare_rounds"] = [round(x, 2) for x in ratios]
    return rows
