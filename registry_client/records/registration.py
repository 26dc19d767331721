"""Registering a version from an ONNX file, cheapest checks first: the file hashed a chunk at a
time, the registry's refusals read (no such model or parent, other bytes under the version),
onnxruntime's check (artifact_check.py: a large file's in a child process), then the bytes
uploaded a few chunks at a time (with `upload`) and the record written in one transaction. A
dry run makes every check and writes nothing: no record, no blob."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from registry_client.cards.card import validate_card
from registry_client.connection import Pipeline
from registry_client.drift.features import validate_feature_names
from registry_client.errors import NotFound, Rejected
from registry_client.records import artifacts
from registry_client.records.artifact_check import check_artifact
from registry_client.records.artifacts import MAX_ARTIFACT_BYTES, SILENT, Progress
from registry_client.records.base import RegistryBase, hset
from registry_client.records.measurements import checked_metrics
from registry_client.records.values import as_text, checked_name, timestamp
from registry_client.schema import BLOB_SCHEME
from registry_client.versions.lineage import parent_of, validate_lineage

__all__ = ["VersionRegistration"]


class VersionRegistration(RegistryBase):
    """Versions registered from ONNX files, audited (ModelRecords adds models and reads)."""

    def register_version(
        self, model: str, version: str, artifact: Path, *, actor: str,
        description: str = "", lineage: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None, upload: bool = False,
        tags: Sequence[str] = (), feature_names: dict[str, list[str]] | None = None,
        max_bytes: int = MAX_ARTIFACT_BYTES, card: Mapping[str, Any] | None = None,
        dry_run: bool = False, model_planned: bool = False, progress: Progress = SILENT,
    ) -> dict[str, str]:  # fmt: skip
        """Register an ONNX file with its sha256, size and the input/output signature
        onnxruntime reads from it: by reference (file:// URI), or with `upload` as
        content-addressed chunks in Redis (redis-blob:<sha256>) for gateways on other hosts.

        `feature_names` names the columns of inputs (input -> names), as drift reports them;
        `card` is the model card (registry_client.cards.card: validated here); the ONNX
        file's own facts (producer, opsets, metadata) are read from it and stored beside the
        signature. `lineage` (registry_client.versions.lineage) may name a parent, which must
        be registered. Versions are immutable: registering the same bytes again returns the
        stored fields (onnxruntime is not asked again); other bytes under the same version are
        Rejected, and so is a file over `max_bytes` (read no further than that).

        The file is read a chunk at a time (hashed, then uploaded, each reported to
        `progress`) and onnxruntime reads a large one in a child process, so memory stays bounded
        however large it is; Rejected when it changed between the reads. With `dry_run`,
        every check is made and the fields that would be written returned, but nothing is
        written or uploaded; `model_planned` says the model is to be created in the same dry
        run, so its absence is no refusal."""
        checked_name(model, "model")
        checked_name(version, "version")
        lineage = validate_lineage(lineage or {})
        checked = checked_metrics(metrics, "metrics") if metrics else {}
        card_json = "" if card is None else json.dumps(validate_card(card), sort_keys=True)
        path, sha256, size = artifacts.hash_file(artifact, max_bytes, progress)
        key = self.keys.version(model, version)
        parent = parent_of(model, lineage["parent"]) if "parent" in lineage else None
        watched = [key, self.keys.model(model)]
        if parent is not None:
            watched.append(self.keys.version(*parent))

        def stored_or_none(pipe: Pipeline) -> dict[str, str] | None:
            """Inside the WATCH: the refusals the registry decides, and the stored fields when
            these bytes are registered already."""
            if not (model_planned and dry_run) and not pipe.exists(self.keys.model(model)):
                raise NotFound(f"model {model!r} is not registered: create it first")
            if parent == (model, version) or (
                parent is not None and not pipe.exists(self.keys.version(*parent))
            ):  # fmt: skip
                raise Rejected(f"lineage.parent: version {parent[1]!r} of model {parent[0]!r}"
                               " is not registered (a parent is registered first)")  # fmt: skip
            stored = {as_text(k): as_text(v) for k, v in pipe.hgetall(key).items()}
            if stored and stored.get("sha256") != sha256:
                raise Rejected(
                    f"version {version!r} of {model!r} is already registered with sha256"
                    f" {stored.get('sha256', '')[:12]}...; versions are immutable: use a new one"
                )
            return stored or None

        # The registry's refusals cost a round trip: they come before onnxruntime's check and
        # the upload, which cost seconds for a large file.
        already = self._transaction(watched, stored_or_none, retry=True)
        if already is not None:
            return already
        progress.stage(f"checking {artifact.name} with onnxruntime", 0)
        described, facts = check_artifact(path, sha256, artifact, size)
        names = validate_feature_names(feature_names or {}, described["inputs"])
        fields = {
            "artifact_uri": f"{BLOB_SCHEME}:{sha256}" if upload else path.as_uri(),
            "sha256": sha256,
            "size": str(size),
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
        if dry_run:
            return fields
        if upload:
            artifacts.upload_file(self._redis, self.keys.blob(sha256), path, sha256, size,
                                  progress)  # fmt: skip

        def write(pipe: Pipeline) -> dict[str, str]:
            stored = stored_or_none(pipe)  # again: the registry may have changed meanwhile
            if stored is not None:
                return stored
            pipe.multi()
            hset(pipe, key, fields)
            pipe.zadd(self.keys.versions(model), {version: time.time()})
            self._audit(pipe, actor, "version.register", model, None,
                        {"version": version, "sha256": sha256}, "")  # fmt: skip
            return fields

        return self._transaction(watched, write, retry=True)
