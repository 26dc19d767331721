"""The metric names real gateways export: what dashboards and alert rules may refer to.

Two gateways run as users run them, each with a private Redis (so the registry, the rule
follower and the rollout controller all run): one process, and a supervisor with two workers
(process metrics labelled by worker, the supervisor's own metrics). The vocabulary comes from
each family's TYPE line, so families without samples yet (shadow, drift, quality, rollout)
count too: a counter adds `_total`, a histogram `_bucket`, `_count` and `_sum`, and so on.
"""

from __future__ import annotations

import functools
import tempfile
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support import onnx_models
from tests.support.gateways import GatewayProcess, eventually, start_gateway_process

__all__ = ["exported_metric_names", "sample_names"]

# The names a family of each type exports, from its name without suffixes.
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}

# Gateways loading a model, following the private registry and electing a controller take a
# few seconds; a loaded CI machine may take many more.
_READY_SECONDS = 90


def sample_names(text: str) -> set[str]:
    """Every sample name the families in a /metrics text export, with or without samples."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def _scrape(gateway: GatewayProcess) -> str:
    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
    return text


def _values(text: str) -> dict[str, float]:
    """Unlabelled samples and the model's version-1 samples, by sample name."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels in ({}, {"model": "credit", "version": "1"}):
                values[sample.name] = sample.value
    return values


def _settled(gateway: GatewayProcess, expected: dict[str, float]) -> Callable[[], bool]:
    """A check that the gateway's /metrics shows every expected value."""

    def check() -> bool:
        values = _values(_scrape(gateway))
        return all(values.get(name) == value for name, value in expected.items())

    return check


def _collect(directory: Path) -> frozenset[str]:
    repo = directory / "models"
    onnx_models.save(onnx_models.classifier(seed=1), repo, "credit", "1")
    # Loaded, following the registry's rule, and leading the rollouts: every subsystem has
    # registered its families by then.
    settled = {"onnxgate_model_loaded": 1.0, "onnxgate_redis_connected": 1.0,
               "onnxgate_rollout_leader": 1.0}  # fmt: skip
    runs = [((), settled), (("--workers", "2"), {**settled, "onnxgate_workers_alive": 2.0})]
    # Both start at once: each takes seconds (interpreter, private Redis, import).
    with ThreadPoolExecutor(len(runs)) as pool:
        starting = [
            pool.submit(start_gateway_process, repo, "--data-dir", str(directory / f"data{i}"),
                        *args)
            for i, (args, _) in enumerate(runs)
        ]  # fmt: skip
    started = [future.result() for future in starting if future.exception() is None]
    try:
        gateways = [future.result() for future in starting]  # the first failure, if any
        names: set[str] = set()
        for gateway, (_, expected) in zip(gateways, runs, strict=True):
            eventually(_settled(gateway, expected), timeout=_READY_SECONDS)
            names |= sample_names(_scrape(gateway))
        return frozenset(names)
    finally:
        for gateway in started:
            _stop(gateway)


def _stop(gateway: GatewayProcess) -> None:
    """SIGTERM and wait (the gateway stops its private Redis); kill one that hangs."""
    try:
        gateway.terminate()
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()
            gateway.process.wait(timeout=10)
        if gateway.process.stderr is not None:
            gateway.process.stderr.close()


@functools.cache
def exported_metric_names() -> frozenset[str]:
    """Sample names a single gateway and a `--workers 2` gateway export (started once per test
    session, stopped before this returns)."""
    with tempfile.TemporaryDirectory(prefix="onnxgate-metrics-") as directory:
        return _collect(Path(directory))
