"""Models and their versions: `{ns}:model:{model}` (owner, description, batching settings,
quality config), `{ns}:versions:{model}` (ordered by registration) and
`{ns}:version:{model}:{version}` (the artifact's location, hash, signature and status).
Versions are immutable once registered."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry_client.connection import Pipeline
from registry_client.errors import NotFound, Rejected
from registry_client.quality.task import QualityConfig
from registry_client.records import artifacts
from registry_client.records.artifacts import MAX_ARTIFACT_BYTES, SILENT, Prefixed, Progress
from registry_client.records.base import hset
from registry_client.records.model_quality import ModelQualityRecords
from registry_client.records.registration import VersionRegistration
from registry_client.records.values import as_text, checked_name, timestamp
from registry_client.repository import scan_repository
from registry_client.schema import BLOB_SCHEME, version_sort_key

__all__ = ["MAX_BATCH_DELAY_US", "MAX_BATCH_ROWS", "ImportedVersion", "ModelRecords"]

MAX_BATCH_DELAY_US = 1_000_000  # a second: longer is a queue, not a batch
MAX_BATCH_ROWS = 65_536


@dataclass(frozen=True, slots=True)
class ImportedVersion:
    """One version of an imported directory: its record before (None: not registered), the
    record written (or with a dry run, that would be), and the model's record when the import
    creates the model (None when it exists)."""

    model: str
    version: str
    before: dict[str, str] | None
    after: dict[str, str]
    new_model: dict[str, str] | None


class ModelRecords(VersionRegistration, ModelQualityRecords):
    """Models, versions and their artifacts; every write audited. Registering a version is
    VersionRegistration's (registration.py)."""

    def create_model(
        self, name: str, *, actor: str, owner: str | None = None,
        description: str | None = None, tags: Sequence[str] | None = None,
        batch_delay_us: int | None = None, max_batch_size: int | None = None,
        quality: QualityConfig | None = None, dry_run: bool = False,
    ) -> dict[str, str]:  # fmt: skip
        """Create a model, or update the fields given (None: leave as stored); returns the
        stored fields. `batch_delay_us` and `max_batch_size` override the gateways' batching
        flags for this model's versions as they load; `quality` (stored whole, as JSON) says
        how its predictions are scored against labels (resolve_quality() builds one). With
        `dry_run`, every check is made and the fields it would store returned; none is."""
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

        def write(pipe: Pipeline) -> dict[str, str]:
            stored = pipe.hgetall(self.keys.model(name))
            before = {as_text(k): as_text(v) for k, v in stored.items()}
            after = {**before, **fields, "created_at": before.get("created_at") or timestamp()}
            if dry_run:  # no MULTI: the transaction ends with the reads
                return after
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
        return [(found.model, found.version) for found in self.import_versions(root, actor=actor)]

    def import_versions(
        self, root: Path, *, actor: str, dry_run: bool = False, progress: Progress = SILENT
    ) -> list[ImportedVersion]:
        """import_repository(), telling what each version's record was and became; each
        version's work is reported to `progress` under its name. With `dry_run`, every check
        of every version is made and nothing is written (no model, record or blob)."""
        found: list[ImportedVersion] = []
        known = set(self.list_models())
        sources = scan_repository(root)
        for number, source in enumerate(sources, start=1):
            model, version = source.model, source.version
            before = self._stored_version(model, version)
            new_model = None
            if model not in known:
                new_model = self.create_model(model, actor=actor, dry_run=dry_run,
                                              description=f"imported from {root}")  # fmt: skip
                known.add(model)
            after = self.register_version(
                model, version, source.path, actor=actor, dry_run=dry_run,
                model_planned=new_model is not None,
                progress=Prefixed(progress, f"[{number}/{len(sources)}] {model} {version}: "),
            )  # fmt: skip
            found.append(ImportedVersion(model, version, before, after, new_model))
        return found

    def _stored_version(self, model: str, version: str) -> dict[str, str] | None:
        fields = self._call(self._redis.hgetall, self.keys.version(model, version))
        return {as_text(k): as_text(v) for k, v in fields.items()} or None

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
