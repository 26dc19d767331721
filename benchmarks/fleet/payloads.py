"""What the simulated gateways write, built once with the gateway's own classes: the request
statistics window of each model (RequestStats, a t-digest per version) and the drift sketches
of each model-version (DriftRecorder fed numpy rows), each at the six fills a 1-minute window
goes through between 10-second flushes, plus an hour window; the prediction records; the
heartbeat's fields."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from benchmarks.fleet.plan import FEATURES, Workload, model_names
from gateway.drift.recorder import DriftRecorder
from gateway.telemetry.request_stats import RequestStats
from registry_client.quality.predictions import PRIMARY, PredictionRecord

__all__ = ["FILLS", "Payloads", "build_payloads", "heartbeat_fields", "prediction_records"]

FILLS = 6  # a 1-minute window is flushed at 10, 20 ... 60 s of its traffic
# A window's requests by outcome, as a healthy version answers them.
_CODES = (("OK", 0.99), ("INVALID_ARGUMENT", 0.005), ("UNAVAILABLE", 0.003),
          ("DEADLINE_EXCEEDED", 0.002))  # fmt: skip
_REGIONS = ("eu", "us", "apac", "latam")
_DEVICES = ("web", "ios", "android")
_WINDOW_START = 1_800_000_000.0  # a fixed minute: the payloads do not depend on today's date


@dataclass(frozen=True, slots=True)
class Payloads:
    """Encoded windows, picked by how far into its minute a flush is."""

    stats: dict[str, tuple[str, ...]]  # model -> FILLS payloads, the last a full minute
    sketches: dict[tuple[str, str], tuple[str, ...]]  # (model, version) -> FILLS payloads
    hours: dict[tuple[str, str], str]  # (model, version) -> its hour window, half an hour in

    def sizes(self) -> dict[str, dict[str, int]]:
        """Bytes of each full window as written: what one replica stores per window."""
        return {
            "statistics minute": {m: len(fills[-1]) for m, fills in self.stats.items()},
            "sketch minute": {f"{m}:{v}": len(fills[-1]) for (m, v), fills in
                              self.sketches.items()},
            "sketch hour": {f"{m}:{v}": len(hour) for (m, v), hour in self.hours.items()},
        }  # fmt: skip


def _split(workload: Workload, rows: int) -> dict[str, int]:
    """Rows of each version when `rows` requests are split between baseline and canary."""
    canary = round(rows * workload.canary_share)
    return {"1": rows - canary, "2": canary}


def _stats_payload(workload: Workload, model: str, requests: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    stats = RequestStats(clock=lambda: _WINDOW_START)
    codes = [code for code, _ in _CODES]
    for version, count in _split(workload, requests).items():
        drawn = rng.choice(len(codes), size=count, p=[share for _, share in _CODES])
        latencies = rng.lognormal(math.log(0.002), 0.5, size=count)
        for code, seconds in zip(drawn, latencies, strict=True):
            stats.record(model, version, "primary", codes[code], float(seconds), revision=1)
    (write,) = stats.pending()
    return write.payload


def _sketch_payload(features: int, rows: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    dropped = Counter("dropped", "", ["model"], registry=CollectorRegistry())
    recorder = DriftRecorder(dropped, rows + 1, clock=lambda: _WINDOW_START)
    inputs = rng.normal(size=(rows, features)).astype(np.float32)
    scores = rng.uniform(size=(rows, 1)).astype(np.float32)
    probabilities = np.hstack([1 - scores, scores])
    for row in range(rows):  # batch-1 requests, as the request path queues them
        recorder.observe("m", "v", {"input": inputs[row : row + 1]}, ("probabilities",),
                         (probabilities[row : row + 1],))  # fmt: skip
    (write,) = recorder.pending()
    return write.payload


def build_payloads(workload: Workload) -> Payloads:
    """Every model's windows at the workload's request rate per replica."""
    per_model = workload.requests_per_second / workload.models  # requests a second
    stats: dict[str, tuple[str, ...]] = {}
    sketches: dict[tuple[str, str], tuple[str, ...]] = {}
    hours: dict[tuple[str, str], str] = {}
    for index, model in enumerate(model_names(workload.models)):
        features = FEATURES[index % len(FEATURES)]
        stats[model] = tuple(
            _stats_payload(workload, model, max(1, round(per_model * 10 * fill)), index)
            for fill in range(1, FILLS + 1)
        )
        for version, share in (("1", 1 - workload.canary_share), ("2", workload.canary_share)):
            rate = per_model * share
            sketches[model, version] = tuple(
                _sketch_payload(features, max(1, round(rate * 10 * fill)), index)
                for fill in range(1, FILLS + 1)
            )
            hours[model, version] = _sketch_payload(features, max(1, round(rate * 1800)), index)
    return Payloads(stats, sketches, hours)


def prediction_records(
    workload: Workload, model_index: int, count: int, now: float, rng: np.random.Generator
) -> list[tuple[str, tuple[PredictionRecord, ...]]]:
    """`count` predictions of one model made at `now`, each under a random 32-character id,
    with two segment values and a binary score, a share of them by the canary."""
    second = int(now)
    canaries = rng.random(count) < workload.canary_share
    scores = rng.random(count)
    regions = rng.integers(0, len(_REGIONS), count)
    devices = rng.integers(0, len(_DEVICES), count)
    entries: list[tuple[str, tuple[PredictionRecord, ...]]] = []
    for i in range(count):
        record = PredictionRecord("2" if canaries[i] else "1", PRIMARY, second,
                                  (_REGIONS[regions[i]], _DEVICES[devices[i]]),
                                  round(float(scores[i]), 6))  # fmt: skip
        entries.append((os.urandom(16).hex(), (record,)))
    return entries


def heartbeat_fields(
    workload: Workload, instance: str, interval: float, revision: int
) -> dict[str, str]:
    """A gateway's heartbeat as gateway/routing/heartbeat.py writes it: every model served
    at `revision`, both versions READY with their memory, nothing loading or failed."""
    models = model_names(workload.models)
    versions = [f"{m}:{v}" for m in models for v in ("1", "2")]
    return {
        "applied": json.dumps({m: revision for m in models}),
        "targets": json.dumps({}),
        "rejected": json.dumps({}),
        "versions": json.dumps([f"{mv}:READY" for mv in versions]),
        "loading": json.dumps({}),
        "memory": json.dumps({mv: 48_234_496 for mv in versions}),
        "failed": json.dumps({}),
        "errors": json.dumps({}),
        "updated_at": str(time.time()),
        "instance": instance,
        "interval": str(interval),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
    }
