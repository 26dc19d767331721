"""RegistryClient: models, versions and routing rules in Redis, every write audited.

Every write is validated first and is atomic (WATCH/MULTI): it bumps `{ns}:epoch`, appends to
the audit stream and publishes a hint on `{ns}:events`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.maint_notifications import MaintNotificationsConfig

from registry_client.drift.features import validate_feature_names
from registry_client.drift.store import DriftStore
from registry_client.errors import (
    Conflict,
    NotFound,
    Rejected,
    Unreachable,
    redis_unreachable_as_error,
)
from registry_client.repository import scan_repository
from registry_client.schema import (
    BLOB_CHUNK_BYTES,
    BLOB_SCHEME,
    MAX_ROUTE_VERSIONS,
    InvalidRule,
    Keys,
    RouteRule,
    SchemaError,
    Shadow,
    Split,
    validate_name,
    version_sort_key,
)
from registry_client.stats.store import StatsStore

__all__ = ["MAX_ARTIFACT_BYTES", "AuditEntry", "RegistryClient", "unregistered_versions"]

AUDIT_MAX_ENTRIES = 100_000
MAX_ARTIFACT_BYTES = 2**31 - 1  # protobuf cannot parse a larger model; gateways refuse one
MAX_BATCH_DELAY_US = 1_000_000  # a second: longer is a queue, not a batch
MAX_BATCH_ROWS = 65_536
VERSION_STATUSES = ("registered", "serving", "retired")
_T = TypeVar("_T")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


AuditEntry = dict[str, str]


def _signature(data: bytes, artifact: Path) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs as onnxruntime sees them: name, type, shape (-1 = dynamic)."""
    # Imported here: it costs half a second of CPU, and only registering a version needs it.
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except (ort_state.Fail, ort_state.InvalidGraph, ort_state.InvalidProtobuf,
            ort_state.InvalidArgument, ort_state.NotImplemented, RuntimeError) as exc:  # fmt: skip
        raise Rejected(f"artifact {artifact} is not a model onnxruntime can load: {exc}") from exc

    def describe(args: Any) -> list[dict[str, Any]]:
        return [
            {"name": a.name, "type": a.type,
             "shape": [d if isinstance(d, int) and d >= 0 else -1 for d in a.shape]}
            for a in args
        ]  # fmt: skip

    return {"inputs": describe(session.get_inputs()), "outputs": describe(session.get_outputs())}


def _name(name: str, what: str) -> str:
    try:
        return validate_name(name, what)
    except SchemaError as exc:
        raise Rejected(str(exc)) from exc


def _hset(pipe: redis.client.Pipeline, key: str, fields: dict[str, str]) -> None:
    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # redis-py's key type is invariant


def _release(pipe: redis.client.Pipeline) -> None:
    """Reset a pipeline and give its connection back to the pool, also when the UNWATCH that
    reset() sends fails. redis-py's reset() gives the connection back only once UNWATCH is
    answered or fails with a ConnectionError; a TimeoutError (not one) or a refusal escapes
    before that and the connection never returns: redis-py 8's pool makes 100, then every
    user gets "Too many connections" (tests/system/test_redis_pool_integrity.py)."""
    try:
        pipe.reset()
    except redis.RedisError:
        if pipe.connection is not None:
            pipe.connection.disconnect()  # type: ignore[no-untyped-call]  # its WATCH ends too
        pipe.watching = False
        pipe.reset()


class RegistryClient:
    """The registry over one Redis connection pool. Thread-safe (redis-py pools are)."""

    def __init__(self, client: redis.Redis, namespace: str = "onnxgate") -> None:
        self._redis = client
        self.keys = Keys(_name(namespace, "namespace"))
        self.stats = StatsStore(client, self.keys)
        self.drift = DriftStore(client, self.keys, self._audit)

    @classmethod
    def from_url(cls, url: str, namespace: str = "onnxgate") -> RegistryClient:
        """Connect lazily to `redis://`, `rediss://` or `unix://` URLs, with retries."""
        retry = redis.retry.Retry(redis.backoff.ExponentialBackoff(cap=1.0, base=0.05), 3)
        # Maintenance notifications (redis-py 8's default with RESP3 over TCP) make the pool
        # skip its check that a connection handed out has no unread reply left on it; the
        # registry's Redis sends none, so keep the check.
        client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, retry=retry,
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )  # fmt: skip
        return cls(client, namespace)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()

    # -- models -------------------------------------------------------------------------------

    def create_model(
        self, name: str, *, actor: str, owner: str | None = None,
        description: str | None = None, tags: Sequence[str] | None = None,
        batch_delay_us: int | None = None, max_batch_size: int | None = None,
    ) -> dict[str, str]:  # fmt: skip
        """Create a model, or update the fields given (None: leave as stored); returns the
        stored fields. `batch_delay_us` and `max_batch_size` override the gateways' batching
        flags for this model's versions as they load."""
        _name(name, "model")
        given = {"owner": owner, "description": description,
                 "tags": None if tags is None else ",".join(tags)}  # fmt: skip
        fields = {k: v for k, v in given.items() if v is not None}
        if batch_delay_us is not None:
            if not -1 <= batch_delay_us <= MAX_BATCH_DELAY_US:
                raise Rejected(f"batch_delay_us: expected -1 (off) to {MAX_BATCH_DELAY_US},"
                               f" got {batch_delay_us}")  # fmt: skip
            fields["batch_delay_us"] = str(batch_delay_us)
        if max_batch_size is not None:
            if not 1 <= max_batch_size <= MAX_BATCH_ROWS:
                raise Rejected(f"max_batch_size: expected 1 to {MAX_BATCH_ROWS}, got"
                               f" {max_batch_size}")  # fmt: skip
            fields["max_batch_size"] = str(max_batch_size)

        def write(pipe: redis.client.Pipeline) -> dict[str, str]:
            before = {_text(k): _text(v) for k, v in pipe.hgetall(self.keys.model(name)).items()}
            after = {**before, **fields, "created_at": before.get("created_at") or _now()}
            pipe.multi()
            _hset(pipe, self.keys.model(name), after)
            pipe.sadd(self.keys.models, name)
            self._audit(pipe, actor, "model.create" if not before else "model.update", name,
                        before or None, after, "")  # fmt: skip
            return after

        return self._transaction([self.keys.model(name)], write, retry=True)

    def list_models(self) -> list[str]:
        """Every model name, sorted."""
        return sorted(_text(m) for m in self._call(self._redis.smembers, self.keys.models))

    def show_model(self, name: str) -> dict[str, Any]:
        """The model's fields and its versions, oldest first."""
        fields = self._call(self._redis.hgetall, self.keys.model(name))
        if not fields:
            raise NotFound(f"model {name!r} is not registered (gatectl models lists them)")
        info: dict[str, Any] = {_text(k): _text(v) for k, v in fields.items()}
        info["versions"] = self.list_versions(name)
        return info

    # -- versions -----------------------------------------------------------------------------

    def register_version(
        self, model: str, version: str, artifact: Path, *, actor: str,
        description: str = "", lineage: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None, upload: bool = False,
        tags: Sequence[str] = (), feature_names: dict[str, list[str]] | None = None,
        max_bytes: int = MAX_ARTIFACT_BYTES,
    ) -> dict[str, str]:  # fmt: skip
        """Register an ONNX file with its sha256, size and the input/output signature
        onnxruntime reads from it: by reference (file:// URI), or with `upload` as
        content-addressed chunks in Redis (redis-blob:<sha256>) for gateways on other hosts.

        `feature_names` names the columns of inputs (input -> names), as drift reports them.
        Versions are immutable: registering the same bytes again returns the stored fields;
        other bytes under the same version are Rejected, and so is a file over `max_bytes`
        (read no further than that)."""
        _name(model, "model")
        _name(version, "version")
        path = artifact.resolve()
        try:
            with path.open("rb") as file:
                data = file.read(max_bytes + 1)
        except OSError as exc:
            raise Rejected(f"artifact {artifact}: cannot read it ({exc.strerror})") from exc
        if len(data) > max_bytes:
            raise Rejected(
                f"artifact {artifact}: larger than {max_bytes} bytes; gateways would refuse it"
                " (raise --max-artifact-bytes and the gateways' --max-model-bytes together)"
            )
        for name, value in (metrics or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Rejected(f"metrics.{name}: expected a number, got {value!r}")
        sha256 = hashlib.sha256(data).hexdigest()
        described = _signature(data, artifact)
        signature = json.dumps(described, sort_keys=True)
        names = validate_feature_names(feature_names or {}, described["inputs"])
        if upload:
            self._upload_blob(sha256, data)
        fields = {
            "artifact_uri": f"{BLOB_SCHEME}:{sha256}" if upload else path.as_uri(),
            "sha256": sha256,
            "size": str(len(data)),
            "signature": signature,
            "description": description,
            "tags": ",".join(tags),
            "lineage": json.dumps(lineage or {}, sort_keys=True),
            "metrics": json.dumps(metrics or {}, sort_keys=True),
            "feature_names": json.dumps(names, sort_keys=True),
            "status": "registered",
            "created_by": actor,
            "created_at": _now(),
        }
        key = self.keys.version(model, version)

        def write(pipe: redis.client.Pipeline) -> dict[str, str]:
            if not pipe.exists(self.keys.model(model)):
                raise NotFound(f"model {model!r} is not registered: create it first")
            stored = {_text(k): _text(v) for k, v in pipe.hgetall(key).items()}
            if stored:
                if stored["sha256"] != fields["sha256"]:
                    raise Rejected(
                        f"version {version!r} of {model!r} is already registered with sha256"
                        f" {stored['sha256'][:12]}...; versions are immutable: use a new one"
                    )
                return stored
            pipe.multi()
            _hset(pipe, key, fields)
            pipe.zadd(self.keys.versions(model), {version: time.time()})
            self._audit(pipe, actor, "version.register", model, None,
                        {"version": version, "sha256": fields["sha256"]}, "")  # fmt: skip
            return fields

        return self._transaction([key, self.keys.model(model)], write, retry=True)

    def _upload_blob(self, sha256: str, data: bytes) -> None:
        """Store bytes under their hash, chunked; written whole or not at all (rename)."""
        final = self.keys.blob(sha256)
        if self._call(self._redis.exists, final):
            return  # content-addressed: already there
        partial = f"{final}:partial:{uuid.uuid4().hex}"
        with self._connection(), self._redis.pipeline(transaction=False) as pipe:
            for offset in range(0, max(len(data), 1), BLOB_CHUNK_BYTES):
                pipe.rpush(partial, data[offset : offset + BLOB_CHUNK_BYTES])
            pipe.execute()
        try:
            self._call(self._redis.renamenx, partial, final)
        finally:
            self._call(self._redis.delete, partial)

    def fetch_blob(self, sha256: str, max_bytes: int = MAX_ARTIFACT_BYTES) -> bytes:
        """The bytes uploaded under a hash; NotFound when absent, Rejected when corrupt or
        over `max_bytes` (of which no more than a chunk beyond is read)."""
        last_chunk = max_bytes // BLOB_CHUNK_BYTES + 1
        chunks = self._call(self._redis.lrange, self.keys.blob(sha256), 0, last_chunk)
        if not chunks:
            raise NotFound(f"blob {sha256[:12]}... is not in the registry")
        data = b"".join(c if isinstance(c, bytes) else str(c).encode() for c in chunks)
        if len(data) > max_bytes:
            raise Rejected(f"blob {sha256[:12]}... is larger than {max_bytes} bytes")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise Rejected(f"blob {sha256[:12]}... does not hash to its name")
        return data

    def import_repository(self, root: Path, *, actor: str) -> list[tuple[str, str]]:
        """Register every version of a Triton-style directory, creating missing models.

        Idempotent: versions already registered with the same bytes are left as they are.
        Returns the (model, version) pairs found."""
        found: list[tuple[str, str]] = []
        known = set(self.list_models())
        for source in scan_repository(root):
            if source.model not in known:
                self.create_model(source.model, actor=actor, description=f"imported from {root}")
                known.add(source.model)
            self.register_version(source.model, source.version, source.path, actor=actor)
            found.append((source.model, source.version))
        return found

    def ensure_default_rules(self, *, actor: str) -> None:
        """Give every model without a rule one that sends everything to its highest version
        and keeps the others loaded at weight 0, so each stays reachable by pin (as when a
        gateway serves a directory directly). A rule someone sets meanwhile wins."""
        rules, _ = self.rules()
        for model in self.list_models():
            versions = self.list_versions(model)[-MAX_ROUTE_VERSIONS:]
            if model in rules or not versions:
                continue
            split = [Split(v, 100 if v == versions[-1] else 0) for v in versions]
            with contextlib.suppress(Conflict):
                self.set_route(
                    model, split, actor=actor, expected_revision=0,
                    reason="default rule: highest version, the others pinnable",
                )  # fmt: skip

    def list_versions(self, model: str) -> list[str]:
        """The model's versions, lowest first by version order."""
        raw = self._call(self._redis.zrange, self.keys.versions(model), 0, -1)
        names = [_text(v) for v in raw if isinstance(v, bytes | str)]
        return sorted(names, key=version_sort_key)

    def show_version(self, model: str, version: str) -> dict[str, str]:
        """The stored fields of one version."""
        fields = self._call(self._redis.hgetall, self.keys.version(model, version))
        if not fields:
            raise NotFound(f"version {version!r} of model {model!r} is not registered")
        return {_text(k): _text(v) for k, v in fields.items()}

    def set_version_status(self, model: str, version: str, status: str, *, actor: str) -> None:
        """Mark a version registered, serving or retired (retired ones cannot be routed to)."""
        if status not in VERSION_STATUSES:
            raise Rejected(f"status: expected one of {', '.join(VERSION_STATUSES)}, got {status!r}")
        key = self.keys.version(model, version)

        def write(pipe: redis.client.Pipeline) -> None:
            before = _text(pipe.hget(key, "status"))
            if not before:
                raise NotFound(f"version {version!r} of model {model!r} is not registered")
            pipe.multi()
            pipe.hset(key, "status", status)
            self._audit(pipe, actor, "version.status", model,
                        {"version": version, "status": before},
                        {"version": version, "status": status}, "")  # fmt: skip

        self._transaction([key], write, retry=True)

    # -- routes -------------------------------------------------------------------------------

    def get_route(self, model: str) -> RouteRule | None:
        """The model's rule, or None when it has none."""
        raw = self._call(self._redis.get, self.keys.route(model))
        return None if raw is None else RouteRule.from_json(raw)

    def set_route(
        self, model: str, split: Sequence[Split], shadows: Sequence[Shadow] = (), *,
        actor: str, reason: str = "", sticky: bool = True,
        expected_revision: int | None = None,
    ) -> RouteRule:  # fmt: skip
        """Replace the model's rule atomically; the result carries the new revision.

        With expected_revision the write happens only if the stored revision still equals it
        (compare-and-set), else Conflict; without it, a concurrent write is retried on top."""
        candidate = RouteRule(model, tuple(split), tuple(shadows), sticky, reason=reason)
        try:
            candidate.validate()
        except SchemaError as exc:
            raise Rejected(str(exc)) from exc
        return self._write_route(candidate, actor, "route.set", expected_revision)

    def history(self, model: str, limit: int = 50) -> list[AuditEntry]:
        """The model's audit entries, newest first."""
        entries: list[AuditEntry] = []
        stream = self._call(self._redis.xrevrange, self.keys.audit, count=10_000) or []
        for entry_id, fields in stream:
            entry = {_text(k): _text(v) for k, v in (fields or {}).items()}
            if entry.get("model") == model:
                entries.append({"id": _text(entry_id), **entry})
                if len(entries) == limit:
                    break
        return entries

    def rollback(
        self, model: str, to_revision: int, *, actor: str, reason: str = "",
        expected_revision: int | None = None,
    ) -> RouteRule:  # fmt: skip
        """A new revision with the content the rule had at `to_revision` (from the audit)."""
        for entry in self.history(model, limit=10_000):
            if entry.get("action", "").startswith("route.") and entry.get("after"):
                old = RouteRule.from_json(entry["after"])
                if old.revision == to_revision:
                    why = reason or f"rollback to revision {to_revision}"
                    candidate = RouteRule(model, old.split, old.shadows, old.sticky, reason=why)
                    return self._write_route(candidate, actor, "route.rollback", expected_revision)
        raise NotFound(f"revision {to_revision} of model {model!r}'s rule is not in the audit")

    def _write_route(
        self, candidate: RouteRule, actor: str, action: str, expected_revision: int | None
    ) -> RouteRule:
        def write(pipe: redis.client.Pipeline) -> RouteRule:
            current, new = self.stage_route(pipe, candidate, actor, expected_revision)
            pipe.multi()
            self.queue_route(pipe, current, new, actor, action)
            return new

        return self._transaction(self.route_keys(candidate), write,
                                 retry=expected_revision is None)  # fmt: skip

    def route_keys(self, candidate: RouteRule) -> list[str]:
        """The keys a write of `candidate` must WATCH: the rule and the versions it names."""
        model = candidate.model
        return [self.keys.route(model), *(self.keys.version(model, v) for v in candidate.versions)]

    def stage_route(
        self, pipe: redis.client.Pipeline, candidate: RouteRule, actor: str,
        expected_revision: int | None,
    ) -> tuple[RouteRule | None, RouteRule]:  # fmt: skip
        """Inside a transaction that WATCHes route_keys(candidate), before MULTI: the rule now
        and the one to write (next revision), after checking the revision and the versions."""
        model = candidate.model
        raw = pipe.get(self.keys.route(model))
        current = None if raw is None else RouteRule.from_json(raw)
        revision = 0 if current is None else current.revision
        if expected_revision is not None and expected_revision != revision:
            raise Conflict(
                f"rule of {model!r} is at revision {revision}, not {expected_revision}:"
                " read it again (gatectl route show) and retry"
            )
        for version in candidate.versions:
            status = _text(pipe.hget(self.keys.version(model, version), "status"))
            if not status:
                raise NotFound(f"version {version!r} of model {model!r} is not registered")
            if status == "retired":
                raise Rejected(f"version {version!r} of model {model!r} is retired")
        new = RouteRule(
            model, candidate.split, candidate.shadows, candidate.sticky,
            revision=revision + 1, updated_by=actor, updated_at=_now(), reason=candidate.reason,
        )  # fmt: skip
        return current, new

    def queue_route(
        self, pipe: redis.client.Pipeline, current: RouteRule | None, new: RouteRule,
        actor: str, action: str,
    ) -> None:  # fmt: skip
        """After MULTI: write the rule staged by stage_route, audit it and publish the hint."""
        pipe.set(self.keys.route(new.model), new.to_json())
        before = None if current is None else current.to_json()
        self._audit(pipe, actor, action, new.model, before, new.to_json(), new.reason)
        pipe.publish(self.keys.events, json.dumps({"model": new.model, "revision": new.revision}))

    # -- what gateways read and write ----------------------------------------------------------

    def epoch(self) -> int:
        """The counter every registry write bumps (0 on an empty registry)."""
        raw = self._call(self._redis.get, self.keys.epoch)
        return int(raw) if raw else 0

    def rules(self) -> tuple[dict[str, RouteRule], dict[str, InvalidRule]]:
        """Every model's rule in one round trip: (valid rules, the invalid documents)."""
        models = self.list_models()
        with self._connection(), self._redis.pipeline(transaction=False) as pipe:
            for model in models:
                pipe.get(self.keys.route(model))
            documents = pipe.execute()
        valid: dict[str, RouteRule] = {}
        invalid: dict[str, InvalidRule] = {}
        for model, document in zip(models, documents, strict=True):
            if document is None:
                continue
            try:
                rule = RouteRule.from_json(document)
                if rule.model != model:
                    raise SchemaError(f"model: expected {model!r}, got {rule.model!r}")
                valid[model] = rule
            except SchemaError as exc:
                digest = hashlib.sha256(document).hexdigest()
                invalid[model] = InvalidRule(str(exc), digest)
        return valid, invalid

    def events(self) -> redis.client.PubSub:
        """A subscription to the change hints on `{ns}:events` (hints only: poll the epoch)."""
        with self._connection():
            pubsub: redis.client.PubSub = self._redis.pubsub(  # type: ignore[no-untyped-call]
                ignore_subscribe_messages=True
            )
            pubsub.subscribe(self.keys.events)
            return pubsub

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
            _hset(pipe, key, fields)
            pipe.expire(key, ttl_seconds)
            replies = pipe.execute()
        replaced = zip(previous, replies[: len(previous)], strict=True)
        return {field: _text(value) for field, value in replaced if value is not None}

    def read_heartbeat(self, replica: str) -> dict[str, str]:
        """One replica's heartbeat fields; {} when it has none (never written, expired, or
        removed by a gateway stopping)."""
        key = self.keys.gateway(validate_name(replica, "replica id"))
        fields = self._call(self._redis.hgetall, key)
        return {_text(k): _text(v) for k, v in (fields or {}).items()}

    def remove_heartbeat(self, replica: str, instance: str) -> bool:
        """Remove the replica's heartbeat if `instance` wrote it last (a gateway stopping, so
        its id is free at once); True when removed. Two commands, not a transaction (a
        gateway's Redis user may not WATCH): another instance writing in between loses one
        beat, which it writes again at its next."""
        key = self.keys.gateway(validate_name(replica, "replica id"))
        if _text(self._call(self._redis.hget, key, "instance")) != instance:
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
                found[_text(key)[len(prefix) :]] = {_text(k): _text(v) for k, v in fields.items()}
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

    # -- plumbing -----------------------------------------------------------------------------

    def transaction(
        self, watched: list[str], body: Callable[[redis.client.Pipeline], _T], *, retry: bool
    ) -> _T:
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
        self, pipe: redis.client.Pipeline, actor: str, action: str, model: str,
        before: object, after: object, reason: str,
    ) -> None:  # fmt: skip
        """Queue one audit entry (and the epoch bump every registry write makes)."""
        self._audit(pipe, actor, action, model, before, after, reason)

    def _audit(
        self, pipe: redis.client.Pipeline, actor: str, action: str, model: str,
        before: object, after: object, reason: str,
    ) -> None:  # fmt: skip
        def encode(value: object) -> str:
            return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

        pipe.xadd(
            self.keys.audit,
            {"who": actor, "when": _now(), "action": action, "model": model,
             "before": "" if before is None else encode(before),
             "after": "" if after is None else encode(after), "reason": reason},
            maxlen=AUDIT_MAX_ENTRIES, approximate=True,
        )  # fmt: skip
        pipe.incr(self.keys.epoch)

    def _transaction(
        self, watched: list[str], body: Callable[[redis.client.Pipeline], _T], *, retry: bool
    ) -> _T:
        with self._connection():
            while True:
                pipe = self._redis.pipeline()
                try:
                    pipe.watch(*watched)  # type: ignore[no-untyped-call]  # unannotated
                    result = body(pipe)
                    if pipe.explicit_transaction:
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
                    _release(pipe)

    def _call(self, method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        with self._connection():
            return method(*args, **kwargs)

    def _connection(self) -> contextlib.AbstractContextManager[None]:
        return redis_unreachable_as_error()


def unregistered_versions(
    client: RegistryClient, versions: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which (model, version) pairs have no record in the registry, read in one round trip
    (a gateway checks that the registry still has what it serves)."""
    if not versions:
        return set()
    with client._connection(), client._redis.pipeline(transaction=False) as pipe:
        for model, version in versions:
            pipe.hget(client.keys.version(model, version), "status")  # HGET: in a gateway's ACL
        found = pipe.execute()
    return {pair for pair, status in zip(versions, found, strict=True) if status is None}
