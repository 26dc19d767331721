"""Small helpers the benchmark drivers share: Prometheus scraping and report formatting."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from servers import HOST, BenchError

Samples = list[tuple[str, dict[str, str], float]]


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


def wait_serving(
    metrics_port: int,
    model: str,
    revision: int,
    timeout_s: float,
    poll_s: float,
    check_alive: Callable[[], None],
) -> tuple[float | None, float]:
    """Poll a gateway's onnxgate_route_revision for the model until it serves `revision`.
    Returns (the seconds that took, or None after timeout_s; the revision last seen)."""
    started = time.monotonic()
    serving = -1.0
    while time.monotonic() < started + timeout_s:
        check_alive()
        serving = total(scrape(metrics_port), "onnxgate_route_revision", model=model)
        if serving == revision:
            return time.monotonic() - started, serving
        time.sleep(poll_s)
    return None, serving


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


def write_json(path: Path | None, data: object) -> None:
    """Write `data` as indented JSON to `path` (a --json-out file), creating its folder; nothing
    when no path was given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def joined(values: Sequence[float], spec: str) -> str:
    """'1.02, 0.97, 1.10': each value formatted with `spec`."""
    return ", ".join(format(v, spec) for v in values)


def ratio_cell(median: float | None, rounds: list[float]) -> str:
    """'0.88 (0.81, 1.04)': the median of the per-round ratios, then each round's."""
    if median is None:
        return "-"
    return f"{median:.2f} ({joined(rounds, '.2f')})"


def failures_section(failures: list[str], blank_after: bool = False) -> list[str]:
    """The report's "## Failures" list, with a blank line before it (or after it), or nothing
    when nothing failed."""
    if not failures:
        return []
    section = ["## Failures", "", *(f"- {f}" for f in failures)]
    return [*section, ""] if blank_after else ["", *section]


def machine_line(env: Mapping[str, Any]) -> str:
    """The report's sentence on the machine and the versions measured with."""
    return (
        f"Machine: {env['date']}, {env['cpu']}, nproc {env['nproc']} (os.cpu_count"
        f" {env['cpus']}), Python {env['python']}, grpcio {env['grpcio']}, protobuf"
        f" {env['protobuf']}, onnxruntime {env['onnxruntime']}, numpy {env['numpy']}."
    )
