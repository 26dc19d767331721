"""Variants of the gateways' settings compared from fleet runs made in interleaved rounds:
per variant the medians over rounds of what each replica costs Redis, and each figure's ratio
to the first variant's in the same round.

    for round in 1 2 3; do
      python -m benchmarks.fleet --replicas 50 --deployments single --rounds 1 \\
          --json-out base-$round.json
      python -m benchmarks.fleet --replicas 50 --deployments single --rounds 1 \\
          --setting stats_flush_seconds=30 --json-out flush-$round.json
    done
    python -m benchmarks.fleet.compare base=base-*.json flush=flush-*.json

Round i of every variant is its i-th file in name order; each file's runs of one
(deployment, N) are one round.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]

FIGURES = (
    ("cmd/s per replica", "commands_per_s_per_replica", 1.0, 1),
    ("in kB/s per replica", "in_bytes_per_s_per_replica", 1e-3, 1),
    ("out kB/s per replica", "out_bytes_per_s_per_replica", 1e-3, 2),
    ("Redis CPU per replica, % of a core", "cpu_share_per_replica", 100.0, 3),
)


def _variant(text: str) -> tuple[str, list[dict[str, Any]]]:
    name, sep, pattern = text.partition("=")
    files = sorted(glob.glob(pattern))
    if not sep or not name or not files:
        raise argparse.ArgumentTypeError(f"expected NAME=FILES matching some files, got {text!r}")
    return name, [
        run["redis"] for path in files for run in json.loads(Path(path).read_text())["runs"]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet.compare",
                                     description=(__doc__ or "").splitlines()[0])  # fmt: skip
    parser.add_argument("variants", nargs="+", type=_variant, metavar="NAME=FILES")
    args = parser.parse_args(argv)
    variants: list[tuple[str, list[dict[str, Any]]]] = args.variants
    _, first = variants[0]
    rounds = min(len(runs) for _, runs in variants)
    print(f"| variant | rounds | {' | '.join(label for label, *_ in FIGURES)} |")
    print("| --- | ---: |" + " ---: |" * len(FIGURES))
    for name, runs in variants:
        cells = []
        for _, key, scale, digits in FIGURES:
            median = statistics.median(run[key] * scale for run in runs[:rounds])
            ratios = [runs[i][key] / first[i][key] for i in range(rounds) if first[i][key]]
            ratio = f" ({statistics.median(ratios):.2f}x)" if ratios and runs is not first else ""
            cells.append(f"{median:,.{digits}f}{ratio}")
        print(f"| {name} | {rounds} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
