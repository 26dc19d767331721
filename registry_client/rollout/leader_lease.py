"""The value of the rollout controller's leader lease (`{ns}:rollout-leader`): who holds it,
as operators know the holder, and what only that holder's process can match."""

from __future__ import annotations

__all__ = ["lease_holder", "lease_value"]

# Between the holder's replica id and its token in the leader lease; replica ids cannot hold it.
_LEASE_SEPARATOR = "|"


def lease_value(replica: str, token: str) -> str:
    """What the controller's leader lease holds: the holder's replica id, to show, and a token
    drawn per gateway process, to compare, so two gateways sharing a replica id by mistake
    still cannot both hold it."""
    return f"{replica}{_LEASE_SEPARATOR}{token}"


def lease_holder(value: str) -> str:
    """The replica id in a lease value ('' for none): who leads, as operators know it."""
    return value.partition(_LEASE_SEPARATOR)[0]
