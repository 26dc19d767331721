"""Redis bytes per audit entry of a model, as the registry writes them: rule changes (the
largest entries: the rule before and after, as JSON) and a rollout controller's holds.

    python benchmarks/audit_size.py --entries 5000

A private redis-server; one model with three versions of the tiny model. Prints the bytes
MEMORY USAGE reports for the model's stream divided by its entries, per kind, and what
AUDIT_MAX_ENTRIES of them hold (docs/architecture.md quotes it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import redis
from models import build_repository
from servers import registry_when_up, start_redis, stop_all

from registry_client.records.base import AUDIT_MAX_ENTRIES
from registry_client.records.rule_documents import Shadow, Split


def _stream_bytes(client: redis.Redis, key: str) -> tuple[int, int]:
    return int(client.memory_usage(key, samples=0) or 0), int(client.xlen(key))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=5000, help="entries per kind (5000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        proc, url = start_redis(Path(work))
        try:
            registry = registry_when_up(url)
            model = "tiny"
            artifact = build_repository(Path(work) / "models", [model])[model]
            registry.create_model(model, actor="bench")
            for version in ("1", "2", "3"):
                registry.register_version(model, version, artifact, actor="bench")
            raw = redis.Redis.from_url(url)
            key = registry.keys.audit(model)
            raw.delete(key)
            for i in range(args.entries):  # a canary moving between 1% and 50%, a shadow
                weight = 1 + i % 50
                registry.set_route(model, [Split("1", 100 - weight), Split("2", weight)],
                                   [Shadow("3", 10)], actor="ops@example.com",
                                   reason="canary step")  # fmt: skip
            rules, count = _stream_bytes(raw, key)
            raw.delete(key)
            with raw.pipeline() as pipe:
                for _ in range(args.entries):
                    registry.audit(pipe, "rollout-controller@gw-3", "rollout.hold", model,
                                   None, None, "waiting for data: 40 of 100 requests")  # fmt: skip
                pipe.execute()
            holds, hold_count = _stream_bytes(raw, key)
            raw.close()
            registry.close()
        finally:
            stop_all([proc])
    for kind, total, n in (("route.set", rules, count), ("rollout.hold", holds, hold_count)):
        per = total / n
        print(
            f"{kind}: {n} entries, {total} bytes, {per:.0f} bytes/entry;"
            f" {AUDIT_MAX_ENTRIES} entries = {per * AUDIT_MAX_ENTRIES / 2**20:.1f} MiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
