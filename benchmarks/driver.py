"""The measure-and-report loop the benchmark drivers share: start a run (pinning check,
signals, the machine it runs on), measure variants round by round in an order that changes
per round, and write the report with the raw results beside it.

On a shared machine the load drifts while a driver runs: measuring every variant in each
round, in an order that alternates or rotates from round to round, makes the drift fall on
all of them alike, and the drivers compare variants within a round.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from bench_report import args_json, display_command
from servers import CLIENT_CPU, SERVER_CPU, BenchError, tail

T = TypeVar("T")
R = TypeVar("R")
VERSIONS_TIMEOUT_S = 60.0


# --- a run's start ----------------------------------------------------------------------------


def check_cpus() -> None:
    """Server and client pinning need CPUs 0 and 1."""
    allowed = os.sched_getaffinity(0)
    if not {int(SERVER_CPU), int(CLIENT_CPU)} <= allowed:
        raise SystemExit(f"need CPUs {SERVER_CPU} and {CLIENT_CPU}; allowed: {sorted(allowed)}")


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into SystemExit so every finally block kills its children."""
    raise SystemExit(128 + signum)


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {p: metadata.version(p) for p in ("grpcio", "protobuf", "onnxruntime", "numpy")}
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        # Other work on a shared 2-CPU box skews everything: keep the evidence with the numbers.
        "loadavg_start": load_average(),
        **versions,
    }


def run_identity() -> dict[str, Any]:
    """The CPUs this process may use and the command line of this run, for the report."""
    return {"nproc": len(os.sched_getaffinity(0)), "command": display_command()}


def start_run(take_sigint: bool = False) -> dict[str, Any]:
    """A pinned driver's start: check CPUs 0 and 1, make SIGTERM (and with take_sigint SIGINT,
    even when inherited ignored by a script started in the background) unwind through the
    blocks that stop the servers; return environment()."""
    check_cpus()
    signal.signal(signal.SIGTERM, on_sigterm)
    if take_sigint:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return environment()


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages now, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


# Runs in another virtualenv: the versions of the packages named on its command line.
VERSIONS_SCRIPT = """
import json, sys
from importlib import metadata
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        found[name] = None
print(json.dumps(found))
"""


def installed_versions(python: Path, packages: tuple[str, ...]) -> dict[str, str | None]:
    """The versions actually installed in a virtualenv."""
    done = subprocess.run(
        [str(python), "-c", VERSIONS_SCRIPT, *packages],
        capture_output=True,
        text=True,
        timeout=VERSIONS_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"{python}: reading versions failed: {tail(done.stderr)}")
    versions: dict[str, str | None] = json.loads(done.stdout)
    return versions


def perf_analyzer_version(args: argparse.Namespace) -> dict[str, str | None] | None:
    """tritonclient's version in perf_analyzer's virtualenv, or None when it cannot be read."""
    with contextlib.suppress(BenchError, subprocess.TimeoutExpired, OSError):
        return installed_versions(args.perf_analyzer.parent / "python", ("tritonclient",))
    return None


def csv_list(kind: type[int] | type[str], choices: tuple[str, ...] = ()) -> Any:
    """Argparse type for a comma-separated list, optionally restricted to choices."""

    def parse(value: str) -> list[Any]:
        items = [kind(v.strip()) for v in value.split(",") if v.strip()]
        bad = [i for i in items if choices and i not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"bad list {value!r}; choices {list(choices)}")
        return items

    return parse


# --- rounds -----------------------------------------------------------------------------------


def alternate(items: Sequence[T], rnd: int) -> list[T]:
    """The items in round `rnd`'s order (0-based): as given in even rounds, reversed in odd."""
    return list(items) if rnd % 2 == 0 else list(reversed(items))


def rotate(items: Sequence[T], rnd: int) -> list[T]:
    """The items in round `rnd`'s order (0-based): starting one further along each round."""
    start = rnd % len(items)
    return [*items[start:], *items[:start]]


def run_rounds(
    rounds: int,
    plan: Callable[[int], Iterable[T]],
    measure: Callable[[int, int, T], R],
    into: list[R],
    heading: Callable[[int], str] | None = None,
    line: Callable[[R], str] | None = None,
) -> None:
    """Measure round after round: plan(round) gives the round's items in the order to measure
    them, measure(round, position, item) measures one. Each result is appended to `into` as it
    comes, so an error midway leaves what was measured for the report; heading(round) is
    printed before a round and line(result) after each measurement, when given."""
    for rnd in range(rounds):
        if heading is not None:
            print(heading(rnd), flush=True)
        for pos, item in enumerate(plan(rnd)):
            result = measure(rnd, pos, item)
            into.append(result)
            if line is not None:
                print(line(result), flush=True)


# --- a run's end ------------------------------------------------------------------------------


def run_in_work_dir(
    prefix: str,
    keep: bool,
    measure: Callable[[Path], None],
    failures: list[str],
    errors: tuple[type[Exception], ...],
    progress: Callable[[], str] | None = None,
) -> None:
    """Run measure(work) in a fresh temporary directory, removed afterwards unless `keep`. A
    failure of the kinds in `errors` is recorded in `failures` instead of raised, so what was
    measured until then is still reported; with `progress`, so is Ctrl-C or SIGTERM (via
    on_sigterm), recorded with progress(), e.g. "after 3 samples"."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        measure(work)
    except errors as err:
        failures.append(f"{type(err).__name__}: {err}")
        print(f"   FAILED: {err}", flush=True)
    except (KeyboardInterrupt, SystemExit) as err:
        if progress is None:
            raise
        failures.append(f"interrupted ({type(err).__name__}) {progress()}")
        print(f"   {failures[-1]}", flush=True)
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def write_results(out: Path, text: str, raw: Mapping[str, object] | list[Any]) -> None:
    """Write the Markdown report to `out` and the raw results as JSON beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.rstrip("\n") + "\n")
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")


def publish(out: Path, text: str, raw: Mapping[str, object] | list[Any]) -> None:
    """Print the report, then write it and the raw results."""
    print("\n" + text)
    write_results(out, text, raw)


def finish(
    args: argparse.Namespace,
    env: dict[str, Any],
    text: str,
    failures: list[str],
    passed: bool = True,
    **results: Any,
) -> int:
    """publish() the report to args.out with the raw results: the environment, the arguments,
    `results` and the failures. Returns the exit code: 1 when anything failed or the run did
    not pass its target, else 0."""
    raw = {"environment": env, "args": args_json(args), **results, "failures": failures}
    publish(args.out, text, raw)
    return 0 if passed and not failures else 1


def judge(
    env: dict[str, Any],
    extra: dict[str, Any],
    reached_end: bool,
    verdict: Callable[[], dict[str, Any]],
    ended_short: str,
) -> None:
    """The end of a run judged against a target (extra holds its "failures"): note the load
    average, then record verdict() in extra["verdict"] when the run reached its end, or that it
    ended short when no failure says why already."""
    env["loadavg_end"] = load_average()
    if reached_end:
        extra["verdict"] = verdict()
    elif not extra["failures"]:
        extra["failures"].append(ended_short)


def finish_judged(
    args: argparse.Namespace, env: dict[str, Any], text: str, extra: dict[str, Any], **results: Any
) -> int:
    """finish() a judged run: `extra` (its failures, verdict and the rest) goes into the raw
    results; the exit code is 0 only when the verdict passed and nothing failed."""
    passed = "verdict" in extra and bool(extra["verdict"]["passed"])
    failures = extra.pop("failures")
    return finish(args, env, text, failures, passed, **results, **extra)
