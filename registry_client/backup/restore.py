"""`gatectl restore`: an export written back, every model in one WATCH/MULTI transaction.

The document is checked whole first (a bad one is Rejected naming its field, and nothing is
written). Then each model is planned (plan.py: what is written, or why it is refused) and
every model not refused is written in one transaction, so a gateway never reads a rule before
the versions it names; all the keys share the `{ns}` hash tag, so that holds on Redis Cluster
too. Uploaded artifacts the export holds are stored before it, as `register --upload` does
(content-addressed: nothing names them until the versions are written), and so are the audit
streams, under names of their own that the transaction renames (staging.py): it stays
short however long the histories.

Each model written gets one `registry.restore` audit entry (who, from which export, what was
written) and a change hint; the epoch is set to at least the exported one first, so after the
audit entries' increments gateways see it above anything the export holds. A model with
nothing to write (a second restore of the same export) gets no entry: restoring the same
export twice writes nothing the second time.

A dry run makes every check and plans every model inside the same WATCH, then ends the
transaction before MULTI: its summary says what a restore would write (blobs_written: the
artifacts it would store), and nothing is written, not even an artifact or a staged stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import redis

from registry_client.backup.document import ModelRecord, RegistryExport, blob_of
from registry_client.backup.export import redis_of
from registry_client.backup.plan import REFUSED, RESTORED, ModelPlan, plan_model
from registry_client.backup.reading import read_models
from registry_client.backup.staging import AuditStaging
from registry_client.client import RegistryClient
from registry_client.connection import Pipeline, RedisClient, queue_publish
from registry_client.errors import Rejected, redis_unreachable_as_error
from registry_client.records.artifacts import upload_blob
from registry_client.records.base import hset
from registry_client.records.rule_documents import RouteRule
from registry_client.schema import Keys, SchemaError, validate_actor

__all__ = ["RESTORE_ACTION", "ModelOutcome", "RestoreSummary", "restore"]

RESTORE_ACTION = "registry.restore"


@dataclass(frozen=True, slots=True)
class ModelOutcome:
    """What a restore did with one model: `result` is restored, unchanged or refused."""

    model: str
    result: str
    written: tuple[str, ...]
    audit_written: int  # exported audit entries written back
    audit_skipped: int  # exported audit entries not written: the model's stream has entries
    reason: str  # why it was refused, or the rule --force replaced


@dataclass(frozen=True, slots=True)
class RestoreSummary:
    """A restore's outcome per model, the epoch it left, the uploaded artifacts it stored and
    those the restored versions name that Redis still lacks (model, version, sha256)."""

    exported_at: str
    export_sha256: str
    epoch: int
    models: tuple[ModelOutcome, ...]
    blobs_written: int
    missing_blobs: tuple[tuple[str, str, str], ...]

    @property
    def refused(self) -> list[ModelOutcome]:
        return [m for m in self.models if m.result == REFUSED]

    def as_dict(self) -> dict[str, object]:
        """The summary as JSON (`gatectl --json restore`)."""
        return {
            **asdict(self),
            "missing_blobs": [
                {"model": m, "version": v, "sha256": s} for m, v, s in self.missing_blobs
            ],
        }


def restore(
    client: RegistryClient, document: object, *, actor: str, force: bool = False,
    dry_run: bool = False,
) -> RestoreSummary:  # fmt: skip
    """Write an export (the JSON document gatectl export writes) back into the client's
    namespace. Rejected, with nothing written, for a document that is not a valid export of
    this namespace; refused models are reported in the summary, not raised. `force` replaces
    models whose rule in Redis is newer than the export's (never a version's bytes). With
    `dry_run`, the summary of what it would do; nothing is written."""
    try:
        validate_actor(actor)
    except SchemaError as exc:
        raise Rejected(str(exc)) from exc
    exported = RegistryExport.from_document(document)
    keys = client.keys
    if exported.namespace != keys.namespace:
        raise Rejected(f"the export is of namespace {exported.namespace!r}, not"
                       f" {keys.namespace!r}: restore it with --namespace"
                       f" {exported.namespace}")  # fmt: skip
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
    raw = redis_of(client)
    with redis_unreachable_as_error():
        blobs_written = _store_blobs(raw, keys, exported, _plans(raw, keys, exported, force),
                                     dry_run)  # fmt: skip
    staging = AuditStaging(raw, keys)

    def write(pipe: Pipeline) -> RestoreSummary:
        epoch = int(raw.get(keys.epoch) or 0)  # on another connection: WATCHed already
        plans = _plans(raw, keys, exported, force)
        missing = _missing_blobs(raw, keys, exported, plans)
        changed = [p for p in plans.values() if p.result == RESTORED]
        staged: dict[str, str] = {}
        if not dry_run:  # a dry run ends the transaction with the plans: no MULTI
            staged = {p.model: staging.stage(p.model, exported.models[p.model].audit)
                      for p in changed if p.audit_written}  # fmt: skip
        if changed and not dry_run:
            pipe.multi()
            if exported.epoch > epoch:
                pipe.set(keys.epoch, exported.epoch)
            source = {"exported_at": exported.exported_at, "epoch": exported.epoch,
                      "sha256": digest}  # fmt: skip
            for plan in changed:
                record = exported.models[plan.model]
                _queue(pipe, keys, plan.model, record, plan)
                if plan.model in staged:
                    staging.queue_move(pipe, staged[plan.model], keys.audit(plan.model))
                client.audit(
                    pipe, actor, RESTORE_ACTION, plan.model,
                    {"rule_revision": plan.revision_before},
                    {"export": source, "written": plan.written(),
                     "rule_revision": plan.revision_after,
                     "audit_entries_skipped": plan.audit_skipped},
                    f"restored from the export of {exported.exported_at}"
                    + (" (--force over a newer rule)" if plan.forced else ""),
                )  # fmt: skip
                if plan.rule and record.rule is not None:
                    revision = RouteRule.from_json(record.rule).revision
                    hint = json.dumps({"model": plan.model, "revision": revision})
                    queue_publish(pipe, keys.events, hint)
        return RestoreSummary(
            exported.exported_at, digest,
            max(epoch, exported.epoch) + len(changed) if changed else epoch,
            tuple(_outcome(p) for p in plans.values()), blobs_written, tuple(missing),
        )  # fmt: skip

    try:
        return client.transaction(_watched(keys, exported), write, retry=True)
    finally:
        with contextlib.suppress(redis.RedisError):  # at worst, what stays expires in an hour
            staging.discard()


def _plans(raw: RedisClient, keys: Keys, exported: RegistryExport,
           force: bool) -> dict[str, ModelPlan]:  # fmt: skip
    names = {model: list(record.versions) for model, record in exported.models.items()}
    current = read_models(raw, keys, list(names), versions=names, audit=False)
    return {model: plan_model(model, record, current[model], force=force)
            for model, record in exported.models.items()}  # fmt: skip


def _store_blobs(raw: RedisClient, keys: Keys, exported: RegistryExport,
                 plans: Mapping[str, ModelPlan], dry_run: bool) -> int:  # fmt: skip
    """Upload the artifacts of the models not refused that Redis lacks; how many (with
    `dry_run`, how many it would)."""
    stored = 0
    for sha in sorted(_uploaded(exported, plans) & set(exported.blobs)):
        if not raw.exists(keys.blob(sha)):
            if not dry_run:
                upload_blob(raw, keys.blob(sha), exported.blobs[sha])
            stored += 1
    return stored


def _missing_blobs(raw: RedisClient, keys: Keys, exported: RegistryExport,
                   plans: Mapping[str, ModelPlan]) -> list[tuple[str, str, str]]:  # fmt: skip
    """The restored versions whose uploaded artifact Redis does not have: gateways cannot
    load them until it is uploaded again (gatectl register --upload, the same bytes). Those
    the export holds were stored before (a dry run would store them), so are not missing."""
    wanted = _uploaded(exported, plans) - set(exported.blobs)
    with raw.pipeline(transaction=False) as pipe:
        for sha in sorted(wanted):
            pipe.exists(keys.blob(sha))
        absent = {sha for sha, found in zip(sorted(wanted), pipe.execute(), strict=True)
                  if not found}  # fmt: skip
    return [(model, version, sha) for model, record in exported.models.items()
            if plans[model].result != REFUSED for version, fields in record.versions.items()
            if (sha := blob_of(fields) or "") in absent]  # fmt: skip


def _uploaded(exported: RegistryExport, plans: Mapping[str, ModelPlan]) -> set[str]:
    return {
        sha
        for model, record in exported.models.items()
        if plans[model].result != REFUSED
        for version in record.versions.values()
        if (sha := blob_of(version)) is not None
    }


def _watched(keys: Keys, exported: RegistryExport) -> list[str]:
    """Every key a restore reads to plan its writes: a change to one retries the plan."""
    watched = [keys.epoch, keys.models, keys.rollouts]
    for model, record in exported.models.items():
        watched += [keys.model(model), keys.versions(model), keys.route(model),
                    keys.rollout(model), keys.quality_events(model), keys.audit(model)]  # fmt: skip
        for version in record.versions:
            watched += [keys.version(model, version), keys.measurements(model, version),
                        keys.reference(model, version)]  # fmt: skip
    return watched


def _queue(pipe: Pipeline, keys: Keys, model: str, record: ModelRecord,
           plan: ModelPlan) -> None:  # fmt: skip
    """After MULTI: the writes `plan` names, each key replaced whole (the audit stream is
    moved into place from where it was staged)."""
    if plan.listed:
        pipe.sadd(keys.models, model)
    if plan.fields:
        _replace_hash(pipe, keys.model(model), record.fields)
    for version in plan.version_fields:
        _replace_hash(pipe, keys.version(model, version), record.versions[version].fields)
    for version in plan.version_scores:
        score = record.versions[version].score
        assert score is not None  # every exported version has one
        pipe.zadd(keys.versions(model), {version: score})
    for version in plan.measurements:
        pipe.delete(keys.measurements(model, version))
        if record.versions[version].measurements:
            pipe.rpush(keys.measurements(model, version), *record.versions[version].measurements)
    for version in plan.references:
        _replace_hash(pipe, keys.reference(model, version), record.versions[version].reference)
    if plan.rule:
        _replace_string(pipe, keys.route(model), record.rule)
    if plan.rollout:
        _replace_string(pipe, keys.rollout(model), record.rollout)
        if record.in_rollouts:
            pipe.sadd(keys.rollouts, model)
        else:
            pipe.srem(keys.rollouts, model)
    if plan.quality_events:
        _replace_hash(pipe, keys.quality_events(model), record.quality_events)


def _replace_hash(pipe: Pipeline, key: str, fields: dict[str, str]) -> None:
    pipe.delete(key)
    if fields:
        hset(pipe, key, fields)


def _replace_string(pipe: Pipeline, key: str, value: str | None) -> None:
    if value is None:
        pipe.delete(key)
    else:
        pipe.set(key, value)


def _outcome(plan: ModelPlan) -> ModelOutcome:
    reason = plan.refused or (f"--force over the rule at revision {plan.revision_before}"
                              if plan.forced else "")  # fmt: skip
    return ModelOutcome(plan.model, plan.result, tuple(plan.written()), plan.audit_written,
                        plan.audit_skipped, reason)  # fmt: skip
