"""Command line of the fleet benchmark (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.fleet import __doc__ as DESCRIPTION
from benchmarks.fleet.deployments import KINDS
from benchmarks.fleet.payloads import build_payloads
from benchmarks.fleet.plan import TASKS, Cadence, Workload, settings_from
from benchmarks.fleet.report import summarise, tables
from benchmarks.fleet.run import Options, measure
from benchmarks.servers import CLIENT_CPU, SERVER_CPU
from gateway.settings import SettingsError


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 10,50,200, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected replica counts of at least 1, got {text!r}")
    return counts


def _kinds(text: str) -> list[str]:
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(KINDS)}, got {text!r}")
    return kinds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fleet", description=(DESCRIPTION or "").splitlines()[0]
    )
    parser.add_argument(
        "--replicas",
        type=_counts,
        default=[10, 50, 200, 500],
        help="simulated gateways per measurement, comma-separated",
    )
    parser.add_argument("--deployments", type=_kinds, default=list(KINDS))
    parser.add_argument("--rounds", type=int, default=3, help="each (deployment, N) this often,"
                        " interleaved")  # fmt: skip
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--changes", type=int, default=20, help="rule changes per measurement")
    parser.add_argument("--models", type=int, default=5, help="models each gateway serves")
    parser.add_argument(
        "--requests-per-second",
        type=float,
        default=50.0,
        help="per gateway, every one logged and sketched",
    )
    parser.add_argument("--drift-references", action="store_true",
                        help="give every version a reference profile: the drift monitor then"
                        " reads every replica's sketches")  # fmt: skip
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a gateway setting other than its default, e.g."
                        " stats_flush_seconds=30")  # fmt: skip
    parser.add_argument("--without", action="append", default=[], choices=TASKS,
                        metavar="TASK", help="leave a task out of every simulated gateway:"
                        f" {', '.join(TASKS)}")  # fmt: skip
    parser.add_argument("--replicas-per-process", type=int, default=125)
    parser.add_argument("--threads", type=int, default=8, help="task threads per process")
    parser.add_argument("--census-samples", type=int, default=3000, help="keys sampled per node")
    parser.add_argument("--no-pin", action="store_true", help="run unpinned")
    parser.add_argument("--json-out", type=Path)
    return parser


def _machine() -> dict[str, Any]:
    version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis": version,
        "host": platform.node(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("rounds", "changes", "models", "threads", "replicas_per_process"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected at least 1")
    if args.duration <= 0 or args.warmup < 0 or args.requests_per_second <= 0:
        parser.error("--duration and --requests-per-second: expected > 0; --warmup: >= 0")
    try:
        settings = settings_from(args.setting)
    except (SettingsError, ValueError) as exc:
        parser.error(str(exc))
    if not args.no_pin:
        os.sched_setaffinity(0, {int(CLIENT_CPU)})  # the simulator processes inherit it
    workload = Workload(args.models, args.requests_per_second,
                        drift_references=args.drift_references)  # fmt: skip
    cadence = Cadence.of(settings)
    payloads = build_payloads(workload)
    options = Options(args.warmup, args.duration, args.changes, args.replicas_per_process,
                      args.threads, None if args.no_pin else SERVER_CPU, args.census_samples,
                      size_predictions=True, without=tuple(args.without))  # fmt: skip
    machine = _machine()
    print(f"== {machine} cadence {asdict(cadence)} workload {asdict(workload)}"
          f" without {args.without} window bytes {payloads.sizes()}", flush=True)  # fmt: skip
    runs: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="onnxgate-fleet-"))
    for round_index in range(args.rounds):
        for replicas in args.replicas:
            for kind in args.deployments:  # interleaved: each round visits every pair
                result = measure(kind, replicas, workload, cadence, payloads, options, work,
                                 seed=round_index * 7919 + replicas)  # fmt: skip
                result["round"] = round_index
                runs.append(result)
                r, p = result["redis"], result["propagation"]
                print(f"round {round_index} N={replicas} {kind} ({result['code']}):"
                      f" {r['commands_per_s']:,.0f} cmd/s,"
                      f" CPU {100 * r['cpu_share']:.1f}%, hint p99 {p['hint']['p99']} ms,"
                      f" simulator achieved {result['simulator']['achieved_min']:.2f}",
                      flush=True)  # fmt: skip
    summaries = summarise(runs)
    codes = sorted({run["code"] for run in runs})
    if len(codes) > 1:
        print(f"warning: the code changed during the run: {', '.join(codes)}")
    print(tables(summaries))
    if args.json_out:
        document = {"machine": machine, "cadence": asdict(cadence), "workload": asdict(workload),
                    "settings": args.setting, "without": args.without,
                    "window_bytes": payloads.sizes(), "runs": runs,
                    "summaries": summaries}  # fmt: skip
        args.json_out.write_text(json.dumps(document, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
