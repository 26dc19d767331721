"""How big `gatectl export` is for a realistic registry, and how long export and restore take.

    python benchmarks/export_size.py --models 20 --versions 5 --entries 1000

A private redis-server; each model registered with its versions (the tiny model, each version
with a description, lineage, registration metrics and a model card), two measurements per
version, then rule changes (a canary between the two newest versions, the one before
shadowed, as benchmarks/audit_size.py writes them) until its audit stream holds `--entries`.
Then gatectl export (in-process, to a file), FLUSHALL, gatectl restore of that file, and a
check that every audit entry came back. Prints the file's size (and gzipped), the time of
each step, the longest single command each ran in Redis (LATENCY LATEST: a MULTI's EXEC is
one, the restore's transaction among them; Redis answers nobody else meanwhile) and the
Redis memory the namespace took (docs/operations.md quotes it).
"""

from __future__ import annotations

import argparse
import gzip
import io
import tempfile
import time
from pathlib import Path

import redis
from models import build_repository
from servers import registry_when_up, start_redis, stop_all

from registry_client.cli.main import main as gatectl
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Shadow, Split

CARD = {
    "algorithm": "gradient-boosted trees (xgboost 2.1, 400 trees, depth 6)",
    "intended_use": "pre-screening of consumer credit applications; a human decides",
    "limitations": "not validated for applicants under 21 or business accounts",
    "training_data": {"uri": "s3://ml-data/credit/train-2026-10.parquet", "rows": 1_200_000,
                      "sha256": "3" * 64},
    "contact": "risk-ml@example.com",
}  # fmt: skip


def _populate(registry: RegistryClient, raw: redis.Redis, artifact: Path, models: int,
              versions: int, entries: int) -> None:  # fmt: skip
    for m in range(models):
        model = f"model-{m:02d}"
        registry.create_model(model, actor="ops@example.com", owner="risk-ml",
                              description="scores consumer credit applications",
                              tags=["tier-1", "eu"])  # fmt: skip
        names = [str(v) for v in range(1, versions + 1)]
        for v in names:
            lineage = {
                "data": "s3://ml-data/credit/train-2026-10.parquet",
                "code": "git:4f2a9c1",
                **({"parent": str(int(v) - 1)} if v != "1" else {}),
            }
            registry.register_version(model, v, artifact, actor="ci@example.com",
                                      description=f"weekly retrain {v}", lineage=lineage,
                                      metrics={"auc": 0.9, "recall": 0.8}, card=CARD)  # fmt: skip
            for week in range(2):
                registry.add_metrics(model, v, {"auc": 0.9 - week / 100}, source="backtest",
                                     actor="ci@example.com")  # fmt: skip
        key = registry.keys.audit(model)
        written = int(raw.xlen(key))
        baseline, candidate, shadow = names[-2], names[-1], names[-3]
        for i in range(max(entries - written, 0)):  # a canary moving between 1% and 50%
            weight = 1 + i % 50
            registry.set_route(model, [Split(baseline, 100 - weight), Split(candidate, weight)],
                               [Shadow(shadow, 10)], actor="ops@example.com",
                               reason="canary step")  # fmt: skip
        assert raw.xlen(key) == entries, key


def _namespace_bytes(raw: redis.Redis) -> int:
    return sum(int(raw.memory_usage(k, samples=0) or 0) for k in raw.scan_iter("{onnxgate}:*"))


def _longest_command(raw: redis.Redis) -> int:
    """Milliseconds of the slowest command since LATENCY RESET (a MULTI's EXEC is one): how
    long Redis answered nobody else, gateways' rule reads included (0: none over 1 ms)."""
    latest = raw.execute_command("LATENCY", "LATEST")
    return max((int(e[3]) for e in latest if e[0] == b"command"), default=0)


def _gatectl(url: str, *argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    code = gatectl(["--redis-url", url, "--actor", "bench", *argv], {}, out, err)
    assert code == 0, err.getvalue()
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20, help="models (20)")
    parser.add_argument("--versions", type=int, default=5, help="versions per model (5, >= 3)")
    parser.add_argument("--entries", type=int, default=1000, help="audit entries per model")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        proc, url = start_redis(Path(work))
        try:
            registry = registry_when_up(url)
            artifact = build_repository(Path(work) / "models", ["tiny"])["tiny"]
            raw = redis.Redis.from_url(url)
            started = time.perf_counter()
            _populate(registry, raw, artifact, args.models, args.versions, args.entries)
            filled = time.perf_counter() - started
            memory = _namespace_bytes(raw)
            saved = Path(work) / "registry.json"
            raw.config_set("latency-monitor-threshold", 1)
            raw.execute_command("LATENCY", "RESET")
            started = time.perf_counter()
            said = _gatectl(url, "export", "--output", str(saved))
            exported = time.perf_counter() - started
            export_held = _longest_command(raw)
            raw.flushall()
            raw.execute_command("LATENCY", "RESET")
            started = time.perf_counter()
            _gatectl(url, "restore", str(saved))
            restored = time.perf_counter() - started
            held = _longest_command(raw)
            for m in range(args.models):  # every entry back, and the restore's own
                assert raw.xlen(registry.keys.audit(f"model-{m:02d}")) == args.entries + 1
            size, packed = saved.stat().st_size, len(gzip.compress(saved.read_bytes()))
            raw.close()
            registry.close()
        finally:
            stop_all([proc])
    print(f"registry written in {filled:.1f} s; its keys take {memory / 2**20:.1f} MiB in Redis")
    print(said.strip())
    print(
        f"export: {size / 2**20:.1f} MiB ({packed / 2**20:.1f} MiB gzipped),"
        f" {size / (args.models * args.entries):.0f} bytes per audit entry (all included)"
    )
    print(
        f"gatectl export {exported:.2f} s, gatectl restore {restored:.2f} s; the longest single"
        f" Redis command: {export_held} ms exporting, {held} ms restoring"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
