"""`gatectl export`: the registry's control plane as one JSON document (document.py), read
with pipelines in a few round trips.

Exported, per model: its hash, its versions (sorted set with scores, each version's hash as
stored, measurements and drift reference), its rule, its rollout document and membership of
`{ns}:rollouts`, its quality-event episodes and its audit stream (every entry with its id);
with `include_artifacts`, the uploaded artifacts its versions name (`redis-blob:<sha256>`).
Not exported: request statistics, drift sketches, the prediction log, labels and the joined
quality state (volume data that expires, under the per-model tags `{ns:model}`), heartbeats
and leases (they are written again by the gateways running).

Not a point-in-time snapshot: every model's rule, rollout, hash, quality events and version
list are read in one MULTI, so they are consistent with each other (a rule never names a
version the export lacks); each version's record, measurements and reference are read just
after, and the audit streams last, so they hold at least the entry of every change the
export shows, and possibly of changes made since. The epoch is read first: at most that of
any state exported.
"""

from __future__ import annotations

from registry_client.backup.document import RegistryExport, blob_of
from registry_client.backup.reading import read_blobs, read_epoch_and_models, read_models
from registry_client.client import RegistryClient
from registry_client.connection import RedisClient
from registry_client.errors import Rejected, redis_unreachable_as_error
from registry_client.records.values import timestamp
from registry_client.schema import NAME_RULE, is_valid_name

__all__ = ["export", "missing_blobs", "redis_of"]


def redis_of(client: RegistryClient) -> RedisClient:
    """The client's connection pool, for pipelined reads (the client's stores take it so)."""
    return client._redis


def export(client: RegistryClient, *, include_artifacts: bool = False) -> RegistryExport:
    """The namespace's control plane now; Rejected (naming the key) when it holds what a
    restore would refuse, so a backup that cannot be restored is known when it is taken;
    Unreachable without Redis."""
    raw, keys = redis_of(client), client.keys
    with redis_unreachable_as_error():
        epoch, models = read_epoch_and_models(raw, keys)
        for model in models:
            _check_name(model, keys.models)
        records = read_models(raw, keys, models)
        for model, record in records.items():
            for version in record.versions:
                _check_name(version, keys.versions(model))
        uploaded = sorted({sha for record in records.values()
                           for version in record.versions.values()
                           if (sha := blob_of(version)) is not None})  # fmt: skip
        blobs = read_blobs(raw, keys, uploaded) if include_artifacts and uploaded else {}
    exported = RegistryExport(timestamp(), keys.namespace, epoch, records, blobs,
                              include_artifacts)  # fmt: skip
    try:
        RegistryExport.from_document(exported.to_document())
    except Rejected as exc:
        raise Rejected(f"the registry holds what a restore would refuse: {exc}; repair that"
                       " record (gatectl, or by hand), then export again") from exc  # fmt: skip
    return exported


def missing_blobs(exported: RegistryExport) -> list[tuple[str, str, str]]:
    """(model, version, sha256) of each version whose artifact is an uploaded blob the export
    does not hold: every one without include_artifacts, else those absent or corrupt in
    Redis."""
    return [(model, version, sha)
            for model, record in exported.models.items()
            for version, fields in record.versions.items()
            if (sha := blob_of(fields)) is not None and sha not in exported.blobs]  # fmt: skip


def _check_name(name: str, key: str) -> None:
    if not is_valid_name(name):
        raise Rejected(f"{key} lists {name!r}, which is not a valid name (expected {NAME_RULE}):"
                       " remove it by hand, then export again")  # fmt: skip
