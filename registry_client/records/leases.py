"""Leader leases (the rollout controller's, the label joiner's): one Redis key with a TTL
holding the leader's replica id and a token drawn per process. The holder renews it every
tick; when the holder dies the key expires and the next replica to tick takes it. The token,
not the replica id, says whose it is: two gateways started with one replica id by mistake
still elect one leader. Plain WATCH/MULTI, no Lua: a gateway's Redis user may not EVAL."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from registry_client.connection import Pipeline
from registry_client.errors import Conflict
from registry_client.records.values import as_text

if TYPE_CHECKING:  # the client's stores read lease values: no import at run time
    from registry_client.client import RegistryClient

__all__ = ["Lease", "lease_holder", "lease_value"]

# Between the holder's replica id and its token in the leader lease; replica ids cannot hold it.
_LEASE_SEPARATOR = "|"


def lease_value(replica: str, token: str) -> str:
    """What a leader lease holds: the holder's replica id, to show, and a token
    drawn per gateway process, to compare, so two gateways sharing a replica id by mistake
    still cannot both hold it."""
    return f"{replica}{_LEASE_SEPARATOR}{token}"


def lease_holder(value: str) -> str:
    """The replica id in a lease value ('' for none): who leads, as operators know it."""
    return value.partition(_LEASE_SEPARATOR)[0]


class Lease:
    """`holder`'s claim on `key` for `ttl_seconds` at a time; `token` (drawn here unless
    given) tells this claim from another process's under the same replica id. Not
    thread-safe: one owner."""

    def __init__(
        self, client: RegistryClient, key: str, holder: str, ttl_seconds: float,
        token: str | None = None,
    ) -> None:  # fmt: skip
        self._client = client
        self.key = key
        self.holder = holder
        self.value = lease_value(holder, token or uuid.uuid4().hex)  # what the key holds
        self._ttl_ms = max(int(ttl_seconds * 1000), 1)

    def hold(self) -> bool:
        """Take the lease when it is free, renew it when it is ours; True while ours.
        RegistryError (Unreachable) when Redis does not answer."""

        def claim(pipe: Pipeline) -> bool:
            current = as_text(pipe.get(self.key))
            if current not in ("", self.value):
                return False
            pipe.multi()
            pipe.set(self.key, self.value, px=self._ttl_ms)
            return True

        try:
            return self._client.transaction([self.key], claim, retry=False)
        except Conflict:  # another replica claimed it between our read and our write
            return False

    def release(self) -> None:
        """Give the lease up at once (at stop) so another replica need not wait out the TTL."""

        def drop(pipe: Pipeline) -> None:
            if as_text(pipe.get(self.key)) == self.value:
                pipe.multi()
                pipe.delete(self.key)

        try:
            self._client.transaction([self.key], drop, retry=False)
        except Conflict:
            pass
