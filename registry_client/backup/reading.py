"""Reading models' control-plane keys in a few pipelined round trips, whatever their number:
what an export holds, and what a restore compares the export with."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from registry_client.backup.document import AuditRecord, ModelRecord, VersionRecord
from registry_client.connection import Pipeline, RedisClient
from registry_client.errors import Rejected
from registry_client.schema import Keys

__all__ = ["read_blobs", "read_epoch_and_models", "read_models"]

_AUDIT_PAGE = 1000  # entries per XRANGE: under a MB per reply, a millisecond or two of Redis
_ROUND_ONE = 8  # commands per model in the first round trip


def read_epoch_and_models(raw: RedisClient, keys: Keys) -> tuple[int, list[str]]:
    """The epoch and every model name, sorted, read together."""
    with raw.pipeline(transaction=True) as pipe:
        pipe.get(keys.epoch)
        pipe.smembers(keys.models)
        epoch, members = _execute(pipe)
    return int(epoch or 0), sorted(_text(m, keys.models) for m in members)


def read_models(
    raw: RedisClient, keys: Keys, models: Sequence[str], *,
    versions: Mapping[str, Sequence[str]] | None = None, audit: bool = True,
) -> dict[str, ModelRecord]:  # fmt: skip
    """Each model's keys, as stored. The rule, rollout, model hash, quality events and version
    list of every model are read in one MULTI (one consistent view of them); the versions'
    hashes, measurements and references in a second; the audit streams last, page by page, so
    each holds at least the entry of every change the records read show. `versions` names
    the versions to read per model (default: those its sorted set lists); without `audit`
    only whether each audit stream exists is read."""
    with raw.pipeline(transaction=True) as pipe:
        for model in models:
            pipe.get(keys.route(model))
            pipe.get(keys.rollout(model))
            pipe.sismember(keys.rollouts, model)
            pipe.hgetall(keys.model(model))
            pipe.hgetall(keys.quality_events(model))
            pipe.zrange(keys.versions(model), 0, -1, withscores=True)
            pipe.exists(keys.audit(model))
            pipe.sismember(keys.models, model)
        first = _execute(pipe)
    tops = {m: first[i * _ROUND_ONE : (i + 1) * _ROUND_ONE] for i, m in enumerate(models)}
    scores = {m: {_text(v, keys.versions(m)): float(s) for v, s in top[5]}
              for m, top in tops.items()}  # fmt: skip
    wanted = {m: list(scores[m]) if versions is None else list(versions.get(m, ()))
              for m in models}  # fmt: skip
    found = _read_versions(raw, keys, wanted, scores)
    entries = _read_audit(raw, keys, [m for m in models if tops[m][6]]) if audit else {}
    return {
        m: ModelRecord(
            fields=_hash(top[3], keys.model(m)),
            versions=found[m],
            rule=_optional(top[0], keys.route(m)),
            rollout=_optional(top[1], keys.rollout(m)),
            in_rollouts=bool(top[2]),
            quality_events=_hash(top[4], keys.quality_events(m)),
            audit=entries.get(m, []),
            audit_stream=bool(top[6]),
            listed=bool(top[7]),
        )
        for m, top in tops.items()
    }


def read_blobs(raw: RedisClient, keys: Keys, hashes: Sequence[str]) -> dict[str, bytes]:
    """The uploaded artifacts under these hashes whose bytes are there and hash to their
    name; the others (absent, cut short) are left out."""
    with raw.pipeline(transaction=False) as pipe:
        for sha in hashes:
            pipe.lrange(keys.blob(sha), 0, -1)
        chunks = _execute(pipe)
    blobs = {}
    for sha, parts in zip(hashes, chunks, strict=True):
        data = b"".join(parts)
        if parts and hashlib.sha256(data).hexdigest() == sha:
            blobs[sha] = data
    return blobs


def _read_versions(
    raw: RedisClient, keys: Keys, wanted: Mapping[str, list[str]],
    scores: Mapping[str, Mapping[str, float]],
) -> dict[str, dict[str, VersionRecord]]:  # fmt: skip
    with raw.pipeline(transaction=True) as pipe:
        for model, names in wanted.items():
            for version in names:
                pipe.hgetall(keys.version(model, version))
                pipe.lrange(keys.measurements(model, version), 0, -1)
                pipe.hgetall(keys.reference(model, version))
        replies = iter(_execute(pipe))
    found: dict[str, dict[str, VersionRecord]] = {}
    for model, names in wanted.items():
        found[model] = {}
        for version in names:
            fields, measured, reference = next(replies), next(replies), next(replies)
            history = keys.measurements(model, version)
            found[model][version] = VersionRecord(
                score=scores[model].get(version),
                fields=_hash(fields, keys.version(model, version)),
                measurements=[_text(item, history) for item in measured],
                reference=_hash(reference, keys.reference(model, version)),
            )  # fmt: skip
    return found


def _read_audit(raw: RedisClient, keys: Keys, models: list[str]) -> dict[str, list[AuditRecord]]:
    """Every entry of each model's stream, oldest first: a page of each model per round trip."""
    entries: dict[str, list[AuditRecord]] = {m: [] for m in models}
    pending = dict.fromkeys(models, "-")
    while pending:
        with raw.pipeline(transaction=False) as pipe:
            for model, start in pending.items():
                pipe.xrange(keys.audit(model), start, "+", count=_AUDIT_PAGE)
            pages = _execute(pipe)
        following = {}
        for model, page in zip(list(pending), pages, strict=True):
            key = keys.audit(model)
            entries[model].extend(
                AuditRecord(_text(entry_id, key), _hash(fields, key)) for entry_id, fields in page
            )
            if len(page) == _AUDIT_PAGE:  # exclusive: the next page starts after the last
                following[model] = f"({entries[model][-1].entry_id}"
        pending = following
    return entries


def _execute(pipe: Pipeline) -> list[Any]:
    try:
        return pipe.execute()
    except redis.ResponseError as exc:  # WRONGTYPE: a key written by hand
        raise Rejected(f"a registry key holds another type than the registry writes: {exc}"
                       " (redis-cli TYPE shows which)") from exc  # fmt: skip


def _text(value: bytes | str, key: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise Rejected(
            f"{key} holds bytes that are not UTF-8 text, which the registry never writes:"
            " repair or delete it by hand, then export again"
        ) from exc


def _optional(value: bytes | str | None, key: str) -> str | None:
    return None if value is None else _text(value, key)


def _hash(fields: Mapping[bytes | str, bytes | str] | None, key: str) -> dict[str, str]:
    return {_text(k, key): _text(v, key) for k, v in (fields or {}).items()}
