"""Models and their versions: `{ns}:model:{model}` (owner, description, batching settings,
quality config), `{ns}:versions:{model}` (ordered by registration) and
`{ns}:version:{model}:{version}` (the artifact's location, hash, signature and status).
Versions are immutable once registered."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import redis

from registry_client.cards.card import validate_card
from registry_client.cards.onnx_facts import onnx_facts
from registry_client.drift.features import validate_feature_names
from registry_client.errors import NotFound, Rejected
from registry_client.quality.task import QualityConfig
from registry_client.records import artifacts
from registry_client.records.artifacts import MAX_ARTIFACT_BYTES
from registry_client.records.base import hset
from registry_client.records.measurements import checked_metrics
from registry_client.records.model_quality import ModelQualityRecords
from registry_client.records.values import as_text, checked_name, timestamp
from registry_client.repository import scan_repository
from registry_client.schema import BLOB_SCHEME, version_sort_key
from registry_client.versions.lineage import parent_of, validate_lineage

__all__ = ["MAX_BATCH_DELAY_US", "MAX_BATCH_ROWS", "ModelRecords"]

MAX_BATCH_DELAY_US = 1_000_000  # a second: longer is a queue, not a batch
MAX_BATCH_ROWS = 65_536


class ModelRecords(ModelQualityRecords):
    """Models, versions and their artifacts; every write audited."""

    def create_model(
        self, name: str, *, actor: str, owner: str | None = None,
        description: str | None = None, tags: Sequence[str] | None = None,
        batch_delay_us: int | None = None, max_batch_size: int | None = None,
        quality: QualityConfig | None = None,
    ) -> dict[str, str]:  # fmt: skip
        """Create a model, or update the fields given (None: leave as stored); returns the
        stored fields. `batch_delay_us` and `max_batch_size` override the gateways' batching
        flags for this model's versions as they load; `quality` (stored whole, as JSON) says
        how its predictions are scored against labels (resolve_quality() builds one)."""
        checked_name(name, "model")
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
        if quality is not None:
            fields["quality"] = quality.validate().to_json()

        def write(pipe: redis.client.Pipeline) -> dict[str, str]:
            stored = pipe.hgetall(self.keys.model(name))
            before = {as_text(k): as_text(v) for k, v in stored.items()}
            after = {**before, **fields, "created_at": before.get("created_at") or timestamp()}
            pipe.multi()
            hset(pipe, self.keys.model(name), after)
            pipe.sadd(self.keys.models, name)
            self._audit(pipe, actor, "model.create" if not before else "model.update", name,
                        before or None, after, "")  # fmt: skip
            return after

        return self._transaction([self.keys.model(name)], write, retry=True)

    def list_models(self) -> list[str]:
        """Every model name, sorted."""
        return sorted(as_text(m) for m in self._call(self._redis.smembers, self.keys.models))

    def show_model(self, name: str) -> dict[str, Any]:
        """The model's fields (the quality config as a dict) and its versions, oldest first.
        An unreadable quality config stays text, with `quality_error` saying why: gateways
        read batching settings here as versions load, and they must not fail on it."""
        fields = self._call(self._redis.hgetall, self.keys.model(name))
        if not fields:
            raise NotFound(f"model {name!r} is not registered (gatectl models lists them)")
        info: dict[str, Any] = {as_text(k): as_text(v) for k, v in fields.items()}
        if "quality" in info:
            try:
                info["quality"] = self._decoded_quality(name, info["quality"]).as_dict()
            except Rejected as exc:
                info["quality_error"] = str(exc)
        info["versions"] = self.list_versions(name)
        return info

    def register_version(
        self, model: str, version: str, artifact: Path, *, actor: str,
        description: str = "", lineage: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None, upload: bool = False,
        tags: Sequence[str] = (), feature_names: dict[str, list[str]] | None = None,
        max_bytes: int = MAX_ARTIFACT_BYTES, card: Mapping[str, Any] | None = None,
    ) -> dict[str, str]:  # fmt: skip
        """Register an ONNX file with its sha256, size and the input/output signature
        onnxruntime reads from it: by reference (file:// URI), or with `upload` as
        content-addressed chunks in Redis (redis-blob:<sha256>) for gateways on other hosts.

        `feature_names` names the columns of inputs (input -> names), as drift reports them;
        `card` is the model card (registry_client.cards.card: validated here); the ONNX
        file's own facts (producer, opsets, metadata) are read from it and stored beside the
        signature. `lineage` (registry_client.versions.lineage) may name a parent, which must
        be registered. Versions are immutable: registering the same bytes again returns the
        stored fields; other bytes under the same version are Rejected, and so is a file over
        `max_bytes` (read no further than that)."""
        checked_name(model, "model")
        checked_name(version, "version")
        lineage = validate_lineage(lineage or {})
        checked = checked_metrics(metrics, "metrics") if metrics else {}
        card_json = "" if card is None else json.dumps(validate_card(card), sort_keys=True)
        path, data = artifacts.read_artifact(artifact, max_bytes)
        sha256 = hashlib.sha256(data).hexdigest()
        described = artifacts.signature(data, artifact)
        facts = onnx_facts(data)
        names = validate_feature_names(feature_names or {}, described["inputs"])
        if upload:
            artifacts.upload_blob(self._redis, self.keys.blob(sha256), data)
        fields = {
            "artifact_uri": f"{BLOB_SCHEME}:{sha256}" if upload else path.as_uri(),
            "sha256": sha256,
            "size": str(len(data)),
            "signature": json.dumps(described, sort_keys=True),
            "description": description,
            "tags": ",".join(tags),
            "lineage": json.dumps(lineage, sort_keys=True),
            "metrics": json.dumps(checked, sort_keys=True),
            "feature_names": json.dumps(names, sort_keys=True),
            "onnx": json.dumps(facts, sort_keys=True),
            "card": card_json,
            "status": "registered",
            "created_by": actor,
            "created_at": timestamp(),
        }
        key = self.keys.version(model, version)
        parent = parent_of(model, lineage["parent"]) if "parent" in lineage else None
        watched = [key, self.keys.model(model)]
        if parent is not None:
            watched.append(self.keys.version(*parent))

        def write(pipe: redis.client.Pipeline) -> dict[str, str]:
            if not pipe.exists(self.keys.model(model)):
                raise NotFound(f"model {model!r} is not registered: create it first")
            if parent == (model, version) or (
                parent is not None and not pipe.exists(self.keys.version(*parent))
            ):  # fmt: skip
                raise Rejected(f"lineage.parent: version {parent[1]!r} of model {parent[0]!r}"
                               " is not registered (a parent is registered first)")  # fmt: skip
            stored = {as_text(k): as_text(v) for k, v in pipe.hgetall(key).items()}
            if stored:
                if stored["sha256"] != fields["sha256"]:
                    raise Rejected(
                        f"version {version!r} of {model!r} is already registered with sha256"
                        f" {stored['sha256'][:12]}...; versions are immutable: use a new one"
                    )
                return stored
            pipe.multi()
            hset(pipe, key, fields)
            pipe.zadd(self.keys.versions(model), {version: time.time()})
            self._audit(pipe, actor, "version.register", model, None,
                        {"version": version, "sha256": fields["sha256"]}, "")  # fmt: skip
            return fields

        return self._transaction(watched, write, retry=True)

    def fetch_blob(self, sha256: str, max_bytes: int = MAX_ARTIFACT_BYTES) -> bytes:
        """The bytes uploaded under a hash; NotFound when absent, Rejected when corrupt or
        over `max_bytes` (of which no more than a chunk beyond is read)."""
        return artifacts.fetch_blob(self._redis, self.keys.blob(sha256), sha256, max_bytes)

    def version_artifact(
        self, model: str, version: str, max_bytes: int = MAX_ARTIFACT_BYTES
    ) -> bytes:
        """The bytes of a registered version's artifact, from Redis (uploaded) or its file,
        checked against the sha256 it was registered with: NotFound for an unknown version,
        Rejected when the bytes cannot be read or are not the registered ones."""
        stored = self.show_version(checked_name(model, "model"), checked_name(version, "version"))
        uri, sha256 = stored.get("artifact_uri", ""), stored.get("sha256", "")
        if uri.startswith(f"{BLOB_SCHEME}:"):
            return self.fetch_blob(sha256, max_bytes)
        _, data = artifacts.read_artifact(artifacts.file_of(uri), max_bytes)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise Rejected(f"the artifact of {model} {version} ({uri}) changed since it was"
                           f" registered: it no longer hashes to {sha256[:12]}...")  # fmt: skip
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

    def list_versions(self, model: str) -> list[str]:
        """The model's versions, lowest first by version order."""
        raw = self._call(self._redis.zrange, self.keys.versions(model), 0, -1)
        names = [as_text(v) for v in raw if isinstance(v, bytes | str)]
        return sorted(names, key=version_sort_key)

    def show_version(self, model: str, version: str) -> dict[str, str]:
        """The stored fields of one version."""
        fields = self._call(self._redis.hgetall, self.keys.version(model, version))
        if not fields:
            raise NotFound(f"version {version!r} of model {model!r} is not registered")
        return {as_text(k): as_text(v) for k, v in fields.items()}
