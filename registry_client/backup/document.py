"""The export document, `onnxgate-registry/1`: each model's control-plane keys as stored, and
optionally the uploaded artifacts, as JSON; read back with every field checked, a bad one
Rejected naming its path (a JSON pointer such as `/models/credit/versions/2/fields/sha256`).

    {"format": "onnxgate-registry/1", "exported_at": ..., "namespace": ..., "epoch": ...,
     "models": {MODEL: {"fields": {...}, "versions": {VERSION: {"score": ..., "fields": {...},
                "measurements": [...], "reference": {...}}}, "rule": ..., "rollout": ...,
                "in_rollouts": ..., "quality_events": {...}, "audit": [{"id", "fields"}]}},
     "blobs": {SHA256: BASE64}}   # only with --include-artifacts
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass

from registry_client.backup import checks
from registry_client.errors import Rejected
from registry_client.records.rule_documents import RouteRule
from registry_client.rollout.plan import RolloutState
from registry_client.schema import BLOB_SCHEME, SchemaError

__all__ = ["FORMAT", "AuditRecord", "ModelRecord", "RegistryExport", "VersionRecord", "blob_of"]

FORMAT = "onnxgate-registry/1"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MODEL_KEYS = ("fields", "versions", "rule", "rollout", "in_rollouts", "quality_events", "audit")
_VERSION_KEYS = ("score", "fields", "measurements", "reference")


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One version's keys: its score in `{ns}:versions:<model>` (registration time; None when
    it is not in the sorted set), its hash, measurements (JSON documents, oldest first) and
    drift reference hash ({} when it has none)."""

    score: float | None
    fields: dict[str, str]
    measurements: list[str]
    reference: dict[str, str]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry of a model's audit stream: its stream id and fields."""

    entry_id: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One model's control-plane keys as stored. `audit_stream` and `listed` tell whether its
    audit stream exists and whether `{ns}:models` lists it (both true in an export)."""

    fields: dict[str, str]
    versions: dict[str, VersionRecord]
    rule: str | None
    rollout: str | None
    in_rollouts: bool
    quality_events: dict[str, str]
    audit: list[AuditRecord]
    audit_stream: bool = True
    listed: bool = True


def blob_of(version: VersionRecord) -> str | None:
    """The sha256 of the uploaded blob the version's artifact is; None for a file (or a URI
    that names no blob)."""
    uri = version.fields.get("artifact_uri", "")
    sha = uri.removeprefix(f"{BLOB_SCHEME}:")
    return sha if sha != uri and _SHA256.fullmatch(sha) else None


@dataclass(frozen=True, slots=True)
class RegistryExport:
    """A namespace's control plane at export time; `blobs` (sha256 -> bytes) only holds the
    uploaded artifacts when they were asked for (`include_artifacts`)."""

    exported_at: str
    namespace: str
    epoch: int
    models: dict[str, ModelRecord]
    blobs: dict[str, bytes]
    include_artifacts: bool

    def to_document(self) -> dict[str, object]:
        """The JSON document (json.dumps it)."""
        document: dict[str, object] = {
            "format": FORMAT, "exported_at": self.exported_at, "namespace": self.namespace,
            "epoch": self.epoch,
            "models": {name: _model_document(m) for name, m in self.models.items()},
        }  # fmt: skip
        if self.include_artifacts:
            document["blobs"] = {sha: base64.b64encode(data).decode()
                                 for sha, data in self.blobs.items()}  # fmt: skip
        return document

    @classmethod
    def from_document(cls, document: object) -> RegistryExport:
        """Parse and check a document; Rejected naming the path of the first bad field."""
        top = checks.json_object(document, "")
        if top.get("format") != FORMAT:
            raise checks.expected("/format", repr(FORMAT), top.get("format"))
        checks.only_fields(
            top, ("format", "exported_at", "namespace", "epoch", "models", "blobs"), ""
        )
        epoch = top.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise checks.expected("/epoch", "an integer >= 0", epoch)
        models = checks.json_object(top.get("models"), "/models")
        blobs = top.get("blobs")
        return cls(
            exported_at=checks.text(top.get("exported_at"), "/exported_at"),
            namespace=checks.name(checks.text(top.get("namespace"), "/namespace"), "/namespace"),
            epoch=epoch,
            models={
                checks.name(m, checks.at("/models", m)): _model(m, doc, checks.at("/models", m))
                for m, doc in models.items()
            },
            blobs={} if blobs is None else _blobs(checks.json_object(blobs, "/blobs")),
            include_artifacts=blobs is not None,
        )


def _model_document(model: ModelRecord) -> dict[str, object]:
    return {
        "fields": model.fields,
        "versions": {v: {"score": r.score, "fields": r.fields, "measurements": r.measurements,
                         "reference": r.reference} for v, r in model.versions.items()},
        "rule": model.rule, "rollout": model.rollout, "in_rollouts": model.in_rollouts,
        "quality_events": model.quality_events,
        "audit": [{"id": e.entry_id, "fields": e.fields} for e in model.audit],
    }  # fmt: skip


def _model(model: str, value: object, path: str) -> ModelRecord:
    doc = checks.json_object(value, path)
    checks.only_fields(doc, _MODEL_KEYS, path, required=True)
    listed = checks.json_object(doc["versions"], f"{path}/versions")
    versions = {
        checks.name(v, checks.at(f"{path}/versions", v)): _version(r, f"{path}/versions/{v}")
        for v, r in listed.items()  # a valid name needs no escaping in the path
    }
    rule = None if doc["rule"] is None else checks.text(doc["rule"], f"{path}/rule")
    rollout = None if doc["rollout"] is None else checks.text(doc["rollout"], f"{path}/rollout")
    if rule is not None:
        _check_rule(model, rule, set(versions), f"{path}/rule")
    if rollout is not None:
        _check_rollout(model, rollout, f"{path}/rollout")
    in_rollouts = doc["in_rollouts"]
    if not isinstance(in_rollouts, bool):
        raise checks.expected(f"{path}/in_rollouts", "true or false", in_rollouts)
    return ModelRecord(
        fields=checks.texts(doc["fields"], f"{path}/fields"), versions=versions,
        rule=rule, rollout=rollout, in_rollouts=in_rollouts,
        quality_events=checks.texts(doc["quality_events"], f"{path}/quality_events"),
        audit=_audit(doc["audit"], f"{path}/audit"),
    )  # fmt: skip


def _version(value: object, path: str) -> VersionRecord:
    doc = checks.json_object(value, path)
    checks.only_fields(doc, _VERSION_KEYS, path, required=True)
    score = doc["score"]
    number = checks.finite(score)
    if number is None:
        raise checks.expected(f"{path}/score", "a finite number", score)
    fields = checks.texts(doc["fields"], f"{path}/fields")
    if not _SHA256.fullmatch(fields.get("sha256", "")):
        raise checks.expected(f"{path}/fields/sha256", "64 hex digits", fields.get("sha256"))
    checks.text(fields.get("artifact_uri"), f"{path}/fields/artifact_uri")
    measurements = doc["measurements"]
    if not isinstance(measurements, list):
        raise checks.expected(f"{path}/measurements", "a list", measurements)
    for i, item in enumerate(measurements):
        try:
            ok = isinstance(json.loads(checks.text(item, f"{path}/measurements/{i}")), dict)
        except ValueError:
            ok = False
        if not ok:
            raise checks.expected(f"{path}/measurements/{i}", "a JSON object as text", item)
    return VersionRecord(number, fields, measurements,
                         checks.texts(doc["reference"], f"{path}/reference"))  # fmt: skip


def _check_rule(model: str, document: str, versions: set[str], path: str) -> None:
    try:
        rule = RouteRule.from_json(document)
    except SchemaError as exc:
        raise Rejected(f"export document {path}: {exc}") from exc
    if rule.model != model:
        raise checks.expected(f"{path}: model", repr(model), rule.model)
    missing = [v for v in rule.versions if v not in versions]
    if missing:
        raise Rejected(f"export document {path}: names version {missing[0]!r}, which the"
                       " export does not hold")  # fmt: skip


def _check_rollout(model: str, document: str, path: str) -> None:
    try:
        state = RolloutState.from_json(document)
    except SchemaError as exc:
        raise Rejected(f"export document {path}: {exc}") from exc
    if state.plan.model != model:
        raise checks.expected(f"{path}: plan.model", repr(model), state.plan.model)


def _audit(value: object, path: str) -> list[AuditRecord]:
    if not isinstance(value, list):
        raise checks.expected(path, "a list", value)
    entries: list[AuditRecord] = []
    last = (0, 0)
    for i, item in enumerate(value):
        where = f"{path}/{i}"
        entry = checks.json_object(item, where)
        checks.only_fields(entry, ("id", "fields"), where, required=True)
        entry_id = checks.text(entry["id"], f"{where}/id")
        parsed = _STREAM_ID.fullmatch(entry_id)
        number = (int(parsed[1]), int(parsed[2])) if parsed else (0, 0)
        if number <= last or number[0] >= 2**64 or number[1] >= 2**64:
            raise checks.expected(f"{where}/id", "a stream id above the entry before's",
                                  entry_id)  # fmt: skip
        fields = checks.texts(entry["fields"], f"{where}/fields")
        if not fields:
            raise checks.expected(f"{where}/fields", "at least one field", fields)
        entries.append(AuditRecord(entry_id, fields))
        last = number
    return entries


def _blobs(doc: dict[str, object]) -> dict[str, bytes]:
    blobs = {}
    for sha, encoded in doc.items():
        path = checks.at("/blobs", sha)
        if not _SHA256.fullmatch(sha):
            raise checks.expected(path, "a key of 64 hex digits", sha)
        try:
            data = base64.b64decode(checks.text(encoded, path), validate=True)
        except binascii.Error as exc:
            raise Rejected(f"export document {path}: not base64 ({exc})") from exc
        if hashlib.sha256(data).hexdigest() != sha:
            raise Rejected(f"export document {path}: the bytes do not hash to their name")
        blobs[sha] = data
    return blobs
