"""What every kind of registry record is written with: one Redis connection pool, a namespace,
Redis errors turned into the registry's, atomic transactions, and the audit entry and epoch bump
that accompany every registry write."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from registry_client.connection import Pipeline, RedisClient, in_transaction, release_pipeline
from registry_client.errors import Conflict, Unreachable, redis_unreachable_as_error
from registry_client.records.values import checked_name, timestamp
from registry_client.schema import Keys

__all__ = ["AUDIT_MAX_ENTRIES", "RegistryBase", "hset"]

# Per model: how far back history and rollback reach. docs/architecture.md gives the bytes.
AUDIT_MAX_ENTRIES = 50_000
_T = TypeVar("_T")


def hset(pipe: Pipeline, key: str, fields: dict[str, str]) -> None:
    """Queue HSET of every field."""
    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # redis-py's key type is invariant


class RegistryBase:
    """The connection pool and namespace the registry's records are kept under; thread-safe
    (redis-py pools are)."""

    def __init__(self, client: RedisClient, namespace: str = "onnxgate") -> None:
        self._redis = client
        self.keys = Keys(checked_name(namespace, "namespace"))

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()

    def transaction(self, watched: list[str], body: Callable[[Pipeline], _T], *, retry: bool) -> _T:
        """WATCH `watched` and run `body`: its reads, then pipe.multi() and the writes it
        queues, executed atomically. A concurrent change retries the body when `retry`, else
        raises Conflict; a lost connection raises Unreachable."""
        return self._transaction(watched, body, retry=retry)

    def read_string(self, key: str) -> bytes | None:
        """One string key's bytes (for the stores built on this client's pool)."""
        raw = self._call(self._redis.get, key)
        return raw.encode() if isinstance(raw, str) else raw

    def read_set(self, key: str) -> set[bytes]:
        """One set key's members."""
        members = self._call(self._redis.smembers, key)
        return {m.encode() if isinstance(m, str) else m for m in members}

    def audit(
        self, pipe: Pipeline, actor: str, action: str, model: str,
        before: object, after: object, reason: str,
    ) -> None:  # fmt: skip
        """Queue one audit entry in the model's stream (and the epoch bump every registry
        write makes)."""
        self._audit(pipe, actor, action, model, before, after, reason)

    def _audit(
        self, pipe: Pipeline, actor: str, action: str, model: str,
        before: object, after: object, reason: str,
    ) -> None:  # fmt: skip
        def encode(value: object) -> str:
            return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

        pipe.xadd(
            self.keys.audit(model),
            {"who": actor, "when": timestamp(), "action": action, "model": model,
             "before": "" if before is None else encode(before),
             "after": "" if after is None else encode(after), "reason": reason},
            maxlen=AUDIT_MAX_ENTRIES, approximate=True,
        )  # fmt: skip
        pipe.incr(self.keys.epoch)

    def _transaction(
        self, watched: list[str], body: Callable[[Pipeline], _T], *, retry: bool
    ) -> _T:
        with self._connection():
            while True:
                pipe = self._redis.pipeline(transaction=True)
                try:
                    pipe.watch(*watched)
                    result = body(pipe)
                    if in_transaction(pipe):
                        pipe.execute()
                    return result
                except redis.WatchError as exc:
                    lost = exc.__context__
                    if isinstance(lost, redis.ConnectionError | redis.TimeoutError):
                        # redis-py's WatchError for a connection lost while WATCHing, not a
                        # concurrent change; the EXEC may have been applied, so neither a
                        # retry (it would write twice) nor Conflict.
                        raise Unreachable(
                            f"Redis is unreachable: {lost}; the change may or may not have"
                            " been written: read it back"
                        ) from exc
                    if not retry:
                        raise Conflict(
                            "the rule changed while it was being written: read it again and retry"
                        ) from exc
                finally:
                    release_pipeline(pipe)

    def _call(self, method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        with self._connection():
            return method(*args, **kwargs)

    def _connection(self) -> contextlib.AbstractContextManager[None]:
        return redis_unreachable_as_error()
