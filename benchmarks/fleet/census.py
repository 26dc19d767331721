"""What the registry's memory holds after a run, by kind of key, every node summed: each key of
the few kinds (statistics and sketch windows, heartbeats, the control plane) found with SCAN
and sized with MEMORY USAGE; the many prediction buckets counted as what remains of DBSIZE and
sized from a random sample (RANDOMKEY). For the hashes that hold one field per replica
(statistics and sketch windows), also the bytes per field: what each replica adds."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import Any

import numpy as np
import redis

from benchmarks.fleet.deployments import Deployment
from benchmarks.fleet.payloads import prediction_records
from benchmarks.fleet.plan import Workload
from registry_client.client import RegistryClient
from registry_client.quality.predictions import ENTRIES_PER_BUCKET, day_of

__all__ = ["key_census", "kind_of", "prediction_bytes"]

_KINDS = (
    ("predictions", re.compile(r"\}:pred:\d+:\d+$")),
    ("prediction counts", re.compile(r"\}:pred:(logged:\d+|\d+:(count|buckets))$")),
    ("statistics windows", re.compile(r"\}:stats:\d+$")),
    ("sketch minutes", re.compile(r"\}:sketch:[^:]+:m\d+$")),
    ("sketch hours", re.compile(r"\}:sketch:[^:]+:h\d+$")),
    ("heartbeats", re.compile(r"\}:gateway:")),
)
# Hashes with one field per replica: their bytes per field say what each replica adds.
PER_REPLICA = ("statistics windows", "sketch minutes", "sketch hours")
# Every key but the prediction buckets (which are counted as the rest and sampled).
SCANNED = ("*}:stats:*", "*}:sketch:*", "*}:pred:logged:*", "*}:pred:*:count",
           "*}:pred:*:buckets")  # fmt: skip


def kind_of(key: str) -> str:
    for kind, pattern in _KINDS:
        if pattern.search(key):
            return kind
    return "control plane and other"


def key_census(
    running: Deployment, control_prefix: str, samples_per_node: int
) -> dict[str, dict[str, Any]]:
    """kind -> keys, bytes, and for per-replica hashes the bytes per field; the control
    plane's keys are those under `control_prefix` (`{ns}`, Keys.prefix)."""
    keys: dict[str, float] = defaultdict(float)
    size: dict[str, float] = defaultdict(float)
    fields: dict[str, int] = defaultdict(int)
    field_bytes: dict[str, int] = defaultdict(int)
    for port in running.ports:
        node = running.node(port)
        total = int(node.dbsize())
        patterns = (*SCANNED, control_prefix + ":*")
        scanned = [k for pattern in patterns for k in node.scan_iter(match=pattern, count=10_000)]
        names = sorted({k.decode() if isinstance(k, bytes) else str(k) for k in scanned})
        names = [name for name in names if kind_of(name) != "predictions"]
        for name, used, length in zip(names, *_sizes(node, names), strict=True):
            kind = kind_of(name)
            keys[kind] += 1
            size[kind] += used
            if kind in PER_REPLICA and length:
                fields[kind] += length
                field_bytes[kind] += used
        remaining = total - len(names)
        sampled = [node.randomkey() for _ in range(min(samples_per_node, max(remaining, 0)))]
        bucket_keys = [
            name for k in sampled if k is not None
            if kind_of(name := k.decode() if isinstance(k, bytes) else str(k)) == "predictions"
        ]  # fmt: skip
        if bucket_keys:
            used_by = _sizes(node, bucket_keys)[0]
            keys["predictions"] += remaining
            size["predictions"] += remaining * sum(used_by) / len(used_by)
    census: dict[str, dict[str, Any]] = {}
    for kind in sorted(keys):
        entry: dict[str, Any] = {"keys": round(keys[kind]), "bytes": round(size[kind])}
        if fields[kind]:
            entry["bytes_per_replica_field"] = round(field_bytes[kind] / fields[kind])
        census[kind] = entry
    return census


def _sizes(node: redis.Redis, names: list[str]) -> tuple[list[int], list[int]]:
    """MEMORY USAGE of each key, and its field count if it is a hash (else 0)."""
    with node.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.memory_usage(name, samples=0)
            pipe.type(name)
        replies = pipe.execute()
    used = [int(u or 0) for u in replies[::2]]
    lengths = [_hlen(node, n) if t == b"hash" else 0 for n, t in zip(names, replies[1::2],
                                                                    strict=True)]  # fmt: skip
    return used, lengths


def _hlen(node: redis.Redis, name: str) -> int:
    try:
        return int(node.hlen(name))
    except redis.ResponseError:  # expired and reused meanwhile as another type
        return 0


def prediction_bytes(
    registry: RegistryClient, running: Deployment, workload: Workload, count: int = 40_000
) -> float:
    """used_memory per stored prediction once a day's buckets are as full as that day's
    traffic leaves them: the bucket count is sized for the day's volume with a quarter to
    spare (predictions.bucket_count), so each ends the day with about 80 entries."""
    model, day = "sizing", day_of(time.time())
    per_bucket = ENTRIES_PER_BUCKET * 4 // 5
    node = running.node(running.ports[0])
    node.set(registry.keys.prediction_buckets(model, day), count // per_bucket)
    before = int(node.info("memory")["used_memory"])
    rng = np.random.default_rng(0)
    for _ in range(count // 1000):
        entries = prediction_records(workload, 0, 1000, time.time(), rng)
        registry.predictions.write(model, entries, 86_400)
    return (int(node.info("memory")["used_memory"]) - before) / count
