"""Exported audit streams written beside their models' streams before a restore's transaction,
which only renames them into place: however long a model's history (up to 50,000 entries),
the transaction stays a few commands per model instead of one per entry, so it holds Redis
for milliseconds and cannot outlast the client's socket timeout."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from registry_client.backup.document import AuditRecord
from registry_client.connection import Pipeline, RedisClient
from registry_client.schema import Keys

__all__ = ["AuditStaging"]

_BATCH = 1000  # entries per pipelined write
_TTL_SECONDS = 3600  # a staged stream a restore left behind (killed) goes by itself


class AuditStaging:
    """The staged streams of one restore: `{ns}:audit:<model>:restoring:<random>` (a model
    name holds no ':', so no model's stream has such a name). Not thread-safe: one restore."""

    def __init__(self, raw: RedisClient, keys: Keys) -> None:
        self._raw = raw
        self._keys = keys
        self._staged: dict[str, str] = {}

    def stage(self, model: str, entries: Sequence[AuditRecord]) -> str:
        """The key of a stream holding `entries` with their ids (written on the first call
        for the model; a transaction retried reuses it)."""
        if model in self._staged:
            return self._staged[model]
        key = f"{self._keys.audit(model)}:restoring:{uuid.uuid4().hex}"
        self._staged[model] = key
        for start in range(0, len(entries), _BATCH):
            with self._raw.pipeline(transaction=False) as pipe:
                for entry in entries[start : start + _BATCH]:
                    pipe.xadd(key, entry.fields, id=entry.entry_id)  # type: ignore[arg-type]  # str values
                pipe.expire(key, _TTL_SECONDS)
                pipe.execute()
        return key

    @staticmethod
    def queue_move(pipe: Pipeline, staged: str, stream: str) -> None:
        """After MULTI: the staged stream becomes the model's (which does not exist: the
        transaction WATCHes it), lasting."""
        # Issued as a command: a cluster pipeline has no rename method.
        pipe.execute_command("RENAME", staged, stream)  # type: ignore[no-untyped-call]
        pipe.persist(stream)

    def discard(self) -> None:
        """Delete what was staged and not moved (a model refused or unchanged on a retry, a
        transaction that failed); moved streams are gone from their staged names already."""
        if self._staged:
            self._raw.delete(*self._staged.values())
            self._staged.clear()
