"""The rollout controller's leader lease: one Redis key holding the leader's replica id with
a TTL. The holder renews it every tick; when the holder dies the key expires and the next
replica to tick takes it. Plain WATCH/MULTI, no Lua: a gateway's Redis user may not EVAL."""

from __future__ import annotations

import redis

from registry_client.client import RegistryClient
from registry_client.errors import Conflict

__all__ = ["Lease"]


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


class Lease:
    """`holder`'s claim on `key` for `ttl_seconds` at a time. Not thread-safe: one owner."""

    def __init__(self, client: RegistryClient, key: str, holder: str, ttl_seconds: float) -> None:
        self._client = client
        self._key = key
        self.holder = holder
        self._ttl_ms = max(int(ttl_seconds * 1000), 1)

    def hold(self) -> bool:
        """Take the lease when it is free, renew it when it is ours; True while ours.
        RegistryError (Unreachable) when Redis does not answer."""

        def claim(pipe: redis.client.Pipeline) -> bool:
            current = _text(pipe.get(self._key))
            if current not in ("", self.holder):
                return False
            pipe.multi()
            pipe.set(self._key, self.holder, px=self._ttl_ms)
            return True

        try:
            return self._client.transaction([self._key], claim, retry=False)
        except Conflict:  # another replica claimed it between our read and our write
            return False

    def holder_now(self) -> str:
        """Who holds the lease ('' when nobody does)."""
        return _text(self._client.read_string(self._key))

    def release(self) -> None:
        """Give the lease up at once (at stop) so another replica need not wait out the TTL."""

        def drop(pipe: redis.client.Pipeline) -> None:
            if _text(pipe.get(self._key)) == self.holder:
                pipe.multi()
                pipe.delete(self._key)

        try:
            self._client.transaction([self._key], drop, retry=False)
        except Conflict:
            pass
