"""What stopping runs at their deadline costs the request path, on the gateway's own classes.

Per run of the tiny benchmark model (32 inputs, batch 1): `session.run` alone, against the
path every request with a deadline now takes: `RunDeadlines.watch()` (a RunOptions and a dict
insert), `session.run` with those options, `RunWatch.done()`. Rounds interleave the two, and
the watcher thread runs meanwhile, as in the gateway; medians of the rounds are reported.

    python benchmarks/run_deadline_cost.py --rounds 7 --runs 20000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from driver import run_rounds
from models import build_tiny
from round_stats import paired_ratios

from gateway.models.ort_errors import session_options
from gateway.models.run_deadlines import RunDeadlines


def _per_run_us(runs: int, call: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(runs):
        call()
    return (time.perf_counter() - started) / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = build_tiny(Path(directory) / "tiny.onnx")
        session = ort.InferenceSession(str(path), session_options(1, 1),
                                       providers=["CPUExecutionProvider"])  # fmt: skip
    spec = session.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in spec.shape]
    feeds = {spec.name: np.random.default_rng(0).normal(size=shape).astype(np.float32)}
    names = [o.name for o in session.get_outputs()]
    deadlines = RunDeadlines()
    deadlines.start()

    def plain() -> object:
        return session.run(names, feeds)

    def watched() -> object:
        watch = deadlines.watch(time.monotonic() + 60)
        result = session.run(names, feeds, watch.options)
        watch.done()
        return result

    calls = {"plain": plain, "watched": watched}

    def timed(rnd: int, pos: int, name: str) -> tuple[str, float]:
        return name, _per_run_us(args.runs, calls[name])

    rounds: list[tuple[str, float]] = []
    run_rounds(args.rounds, lambda rnd: calls, timed, rounds)  # the same order every round
    deadlines.stop()
    plain_us, watched_us = ([us for done, us in rounds if done == name] for name in calls)
    ratios = paired_ratios(plain_us, watched_us)
    print(
        f"session.run alone:        {statistics.median(plain_us):.2f} us per run (median of"
        f" {args.rounds} rounds; min {min(plain_us):.2f}, max {max(plain_us):.2f})"
    )
    print(
        f"watched (deadline-bound): {statistics.median(watched_us):.2f} us per run (min"
        f" {min(watched_us):.2f}, max {max(watched_us):.2f})"
    )
    print(
        f"added: {statistics.median(watched_us) - statistics.median(plain_us):.2f} us;"
        f" ratio per round: median {statistics.median(ratios):.3f}"
        f" (min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


if __name__ == "__main__":
    main()
