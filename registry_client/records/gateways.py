"""Gateways' heartbeats (`{ns}:gateway:{replica}`): each live replica's status hash, renewed
before it expires, and what it says about one model's rule and versions across replicas."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from registry_client.records.base import hset
from registry_client.records.rules import RuleRecords
from registry_client.records.values import as_text
from registry_client.schema import validate_name

__all__ = ["GatewayRecords"]


class GatewayRecords(RuleRecords):
    """Heartbeats, read against the rules they report applying."""

    def heartbeat(
        self, replica: str, fields: dict[str, str], ttl_seconds: int,
        previous: Sequence[str] = (),
    ) -> dict[str, str]:  # fmt: skip
        """Overwrite this replica's status hash; it expires unless renewed. Returns what the
        `previous` fields held just before, read in the same transaction (a field the hash
        did not have, or a hash expired, is left out): whose heartbeat this one replaced."""
        key = self.keys.gateway(validate_name(replica, "replica id"))
        with self._connection(), self._redis.pipeline(transaction=True) as pipe:
            for field in previous:
                pipe.hget(key, field)  # HGET, not HMGET: in a gateway's least-privilege ACL
            pipe.delete(key)
            hset(pipe, key, fields)
            pipe.expire(key, ttl_seconds)
            replies = pipe.execute()
        replaced = zip(previous, replies[: len(previous)], strict=True)
        return {field: as_text(value) for field, value in replaced if value is not None}

    def read_heartbeat(self, replica: str) -> dict[str, str]:
        """One replica's heartbeat fields; {} when it has none (never written, expired, or
        removed by a gateway stopping)."""
        key = self.keys.gateway(validate_name(replica, "replica id"))
        fields = self._call(self._redis.hgetall, key)
        return {as_text(k): as_text(v) for k, v in (fields or {}).items()}

    def remove_heartbeat(self, replica: str, instance: str) -> bool:
        """Remove the replica's heartbeat if `instance` wrote it last (a gateway stopping, so
        its id is free at once); True when removed. Two commands, not a transaction (a
        gateway's Redis user may not WATCH): another instance writing in between loses one
        beat, which it writes again at its next."""
        key = self.keys.gateway(validate_name(replica, "replica id"))
        if as_text(self._call(self._redis.hget, key, "instance")) != instance:
            return False
        return bool(self._call(self._redis.delete, key))

    def gateways(self) -> dict[str, dict[str, str]]:
        """Every live replica's heartbeat, by replica id."""
        found: dict[str, dict[str, str]] = {}
        prefix = self.keys.gateway("")
        with self._connection():  # the scan runs as it is iterated: inside, so errors map
            keys = list(self._redis.scan_iter(match=prefix + "*", count=200))
        for key in keys:
            fields = self._call(self._redis.hgetall, key)
            if fields:
                found[as_text(key)[len(prefix) :]] = {
                    as_text(k): as_text(v) for k, v in fields.items()
                }
        return found

    def replica_status(self, model: str) -> dict[str, Any]:
        """Which live replica serves which revision of the model's rule, which revision it is
        working towards, each version's state there (LOADING with its seconds, READY with the
        memory its probe measured, FAILED with the reason) and what failed."""
        rule = self.get_route(model)
        replicas = []
        prefix = f"{model}:"

        def of_model(field: str, beat: dict[str, str]) -> dict[str, Any]:
            values: dict[str, Any] = json.loads(beat.get(field, "{}"))
            return {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}

        for replica, beat in sorted(self.gateways().items()):
            loading, memory = of_model("loading", beat), of_model("memory", beat)
            failed = of_model("failed", beat)
            states = []
            for entry in json.loads(beat.get("versions", "[]")):
                if not entry.startswith(prefix):
                    continue
                version, _, state = entry[len(prefix) :].rpartition(":")
                states.append({
                    "version": version, "state": state, "loading_seconds": loading.get(version),
                    "memory_bytes": memory.get(version), "reason": failed.get(version, ""),
                })  # fmt: skip
            replicas.append({
                "replica": replica,
                "applied_revision": json.loads(beat.get("applied", "{}")).get(model),
                "target_revision": json.loads(beat.get("targets", "{}")).get(model),
                "rejected_revision": json.loads(beat.get("rejected", "{}")).get(model),
                "versions": [f"{v['version']}:{v['state']}" for v in states],
                "version_states": states, "failed": failed,
                "error": json.loads(beat.get("errors", "{}")).get(model, ""),
            })  # fmt: skip
        return {"model": model, "revision": None if rule is None else rule.revision,
                "replicas": replicas}  # fmt: skip
