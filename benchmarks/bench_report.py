"""Small helpers the benchmark drivers share: Prometheus scraping and report formatting."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from serving_core import HOST, BenchError, check_cpus, environment, on_sigterm

Samples = list[tuple[str, dict[str, str], float]]


def start_run() -> dict[str, object]:
    """A pinned driver's start: check CPUs 0 and 1, make SIGTERM, and SIGINT even when inherited
    ignored (started from a script in the background), unwind through the blocks that stop the
    servers; return serving_core's environment()."""
    check_cpus()
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return environment()


def scrape(metrics_port: int) -> Samples:
    """Every sample of a gateway's Prometheus endpoint."""
    url = f"http://{HOST}:{metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError as err:
        raise BenchError(f"metrics endpoint {url}: {err}") from err
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(
        value
        for sample, have, value in samples
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )


def median_of(values: list[float | None]) -> float | None:
    """Median of the values present, or None."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, spec: str) -> str:
    """Format a number, '-' when absent."""
    return "-" if value is None else format(value, spec)


def display_command() -> str:
    """The command line of this run, with paths relative to the current directory."""
    cwd = Path.cwd()
    shown = []
    for part in [sys.executable, *sys.argv]:
        path = Path(part)
        if path.is_absolute() and path.is_relative_to(cwd) and path.exists():
            part = str(path.relative_to(cwd))
        shown.append(part)
    return shlex.join(shown)


def args_json(args: argparse.Namespace) -> dict[str, object]:
    """A driver's arguments, JSON-ready (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def write_results(out: Path, text: str, raw: Mapping[str, object]) -> None:
    """Write the Markdown report to `out` and the raw results as JSON beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")


def run_in_work_dir(
    prefix: str,
    keep: bool,
    measure: Callable[[Path], None],
    failures: list[str],
    errors: tuple[type[Exception], ...],
    progress: Callable[[], str],
) -> None:
    """Run measure(work) in a fresh temporary directory, removed afterwards unless `keep`. A
    failure of the kinds in `errors`, Ctrl-C or SIGTERM (via on_sigterm) is recorded in
    `failures` (an interruption with `progress()`, e.g. "after 3 samples") instead of raised,
    so what was measured until then is still reported."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        measure(work)
    except errors as err:
        failures.append(f"{type(err).__name__}: {err}")
        print(f"   FAILED: {err}", flush=True)
    except (KeyboardInterrupt, SystemExit) as err:
        failures.append(f"interrupted ({type(err).__name__}) {progress()}")
        print(f"   {failures[-1]}", flush=True)
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
