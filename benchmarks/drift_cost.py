"""Drift recording cost and Redis memory, measured on the gateway's own classes.

- Request path: DriftRecorder.observe() with one 30-feature row (a read-only view, as the
  gateway passes it), per call.
- Background: DriftRecorder.fold() per row, batch-1 traffic (one row per request) and batches
  of 100, with and without the reference's histogram bins, and with the 2 class scores a
  request answers sketched as output features as well.
- Redis: the bytes one replica keeps per model-version at 30 features and a given request
  rate: minute windows (kept 1 h), hourly windows (kept 8 days, 24 a day), measured with
  MEMORY USAGE on a real redis-server.

    python benchmarks/drift_cost.py --rate 500
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis
from prometheus_client import CollectorRegistry, Counter

from gateway.drift.recorder import DriftRecorder
from registry_client.drift.reference import FeatureReference
from registry_client.drift.store import (
    HOUR,
    HOUR_TTL_SECONDS,
    MINUTE,
    MINUTE_TTL_SECONDS,
    DriftStore,
)
from registry_client.schema import Keys

FEATURES = 30


def _recorder(capacity: int = 10_000_000) -> DriftRecorder:
    return DriftRecorder(Counter("dropped", "", ["model"], registry=CollectorRegistry()), capacity)


def _rows(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, FEATURES)).astype(np.float32)


def _with_bins(recorder: DriftRecorder) -> None:
    training = _rows(20_000, seed=1)
    bins = {}
    for i in range(FEATURES):
        reference = FeatureReference.from_values(training[:, i])
        assert reference is not None
        bins[f"input[{i}]"] = reference.bins
    recorder.set_bins("m", "1", bins)


def observe_us(calls: int) -> float:
    """Median over 5 runs of the per-call cost of observe() with one row."""
    data = _rows(1).tobytes()
    feeds = [{"input": np.frombuffer(data, np.float32).reshape(1, FEATURES)} for _ in range(calls)]
    runs = []
    for _ in range(5):
        recorder = _recorder()
        started = time.perf_counter()
        for feed in feeds:
            recorder.observe("m", "1", feed)
        runs.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(runs)


def fold_us_per_row(rows: int, batch: int, bins: bool, outputs: int = 0) -> float:
    """Median over 5 runs of fold() time per row, `rows` queued as requests of `batch` rows,
    each with an output of `outputs` class scores per row (0: inputs only)."""
    data = _rows(rows)
    scores = np.random.default_rng(2).random((rows, outputs)).astype(np.float32)
    names = ("probabilities",) if outputs else ()
    runs = []
    for _ in range(5):
        recorder = _recorder()
        if bins:
            _with_bins(recorder)
        for start in range(0, rows, batch):
            answered = [scores[start : start + batch]] if outputs else []
            recorder.observe("m", "1", {"input": data[start : start + batch]}, names, answered)
        started = time.perf_counter()
        recorder.fold()
        runs.append((time.perf_counter() - started) / rows * 1e6)
    return statistics.median(runs)


def window_payloads(rate: int) -> tuple[str, str]:
    """One minute's and one hour's sketches at `rate` rows/s, with histogram bins."""
    recorder = _recorder()
    _with_bins(recorder)
    clock = [3600.0 * 500_000]  # the start of an hour
    recorder._clock = lambda: clock[0]  # a benchmark drives time
    minute_payload = ""
    for minute in range(60):
        rows = _rows(rate * 60, seed=minute)
        for start in range(0, len(rows), 1000):
            recorder.observe("m", "1", {"input": rows[start : start + 1000]})
        recorder.fold()
        if minute == 0:
            minute_payload = next(w.payload for w in recorder.pending() if w.granularity == MINUTE)
        clock[0] += 60
    recorder.fold()
    hour = next(w.payload for w in recorder.pending() if w.granularity == HOUR)
    return minute_payload, hour


def redis_bytes(payload: str, keys: int) -> int:
    """MEMORY USAGE of `keys` hash keys holding `payload` in one replica field."""
    server = shutil.which("redis-server")
    assert server, "redis-server is needed"
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        proc = subprocess.Popen([server, "--port", "0", "--unixsocket", str(sock), "--save", "",
                                 "--appendonly", "no"], stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            for _ in range(100):
                if sock.exists():
                    break
                time.sleep(0.05)
            client = redis.Redis(unix_socket_path=str(sock))
            store = DriftStore(client, Keys(), lambda *_: None)
            total = 0
            for window in range(keys):
                key = store._key("m", "1", MINUTE, window)  # measure its keys
                client.hset(key, "replica-a", payload)
                total += int(client.memory_usage(key) or 0)
            client.close()
            return total
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=500, help="rows per second (500)")
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args(argv)
    print(f"observe(), 1 row of {FEATURES}: {observe_us(args.calls):.2f} us per request")
    for batch in (1, 100):
        for bins in (False, True):
            cost = fold_us_per_row(50_000, batch, bins)
            label = "with reference bins" if bins else "no reference"
            print(f"fold(), batch {batch}, {label}: {cost:.2f} us per row")
        with_scores = fold_us_per_row(50_000, batch, False, outputs=2)
        print(f"fold(), batch {batch}, no reference, plus 2 output scores: {with_scores:.2f} us"
              " per row")  # fmt: skip
    minute, hour = window_payloads(args.rate)
    minute_keys, hour_keys = MINUTE_TTL_SECONDS // 60, HOUR_TTL_SECONDS // 3600
    minute_bytes = redis_bytes(minute, minute_keys)
    hour_bytes = redis_bytes(hour, hour_keys)
    print(f"payload at {args.rate} rows/s: minute {len(minute):,} B, hour {len(hour):,} B")
    print(f"Redis per model-version and replica: minutes (1 h) {minute_bytes / 2**20:.2f} MiB,"
          f" hours {hour_bytes / hour_keys * 24 / 2**20:.2f} MiB per day"
          f" ({hour_bytes / 2**20:.2f} MiB for 8 days)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
