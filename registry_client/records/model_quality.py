"""A model's quality config, the `quality` field of `{ns}:model:{model}`: reading it, and
working out a new one from the flags given, the stored config and the output signature of the
model's newest version."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from registry_client.errors import Rejected
from registry_client.quality.task import QualityConfig, infer_config, signature_outputs
from registry_client.records.base import RegistryBase
from registry_client.records.values import as_text, checked_name

__all__ = ["ModelQualityRecords"]


class ModelQualityRecords(RegistryBase):
    """Reading and resolving models' quality configs (ModelRecords.create_model stores them)."""

    def model_quality(self, name: str) -> QualityConfig | None:
        """The model's quality config, None when it has none; Rejected naming the model when
        the stored one cannot be read."""
        raw = self._call(self._redis.hget, self.keys.model(checked_name(name, "model")), "quality")
        return None if raw is None else self._decoded_quality(name, as_text(raw))

    def _decoded_quality(self, name: str, raw: str) -> QualityConfig:
        try:
            return QualityConfig.from_json(raw)
        except Rejected as exc:
            raise Rejected(
                f"the quality config of model {name!r} is unreadable: {exc}; replace it with"
                " gatectl model create NAME --task ... --score-output ..."
            ) from exc

    def resolve_quality(
        self, name: str, *, task: str | None = None, score_output: str | None = None,
        threshold: float | None = None, positive_label: int | None = None,
        segments: Sequence[str] | None = None, max_segment_values: int | None = None,
        label_deadline_seconds: float | None = None,
    ) -> QualityConfig:  # fmt: skip
        """The config `create_model(quality=...)` should store for these fields (None: not
        given), validated; nothing is written.

        Without `task` or `score_output` on a model that has a config, the given fields
        replace the stored ones (a binary score column that was the positive class's follows
        a new `positive_label`). Otherwise task and score output are inferred (infer_config)
        from the output signature of the model's newest registered version, the fields not
        given kept from a stored config; a model without versions needs both `task` and
        `score_output`."""
        checked_name(name, "model")
        given: dict[str, Any] = {"threshold": threshold, "positive_label": positive_label,
                 "segments": None if segments is None else tuple(segments),
                 "max_segment_values": max_segment_values,
                 "label_deadline_seconds": label_deadline_seconds}  # fmt: skip
        changes = {k: v for k, v in given.items() if v is not None}
        reshaped = task is not None or score_output is not None
        try:
            stored = self.model_quality(name)
        except Rejected:
            if not reshaped:
                raise
            stored = None  # replaced whole: task and score output given anew
        if stored is not None and not reshaped:
            updated = dataclasses.replace(stored, **changes).validate()
            if stored.task == "binary" and stored.score_index == stored.positive_label:
                # The column followed the positive class: it follows a new one too.
                updated = dataclasses.replace(updated, score_index=updated.positive_label)
            return updated
        kept = {} if stored is None else {
            k: getattr(stored, k) for k in given if k not in changes
        }  # fmt: skip
        fields = {**kept, **changes}
        outputs = self._newest_outputs(name)
        if outputs is None and (task is None or score_output is None):
            raise Rejected(
                f"model {name!r} has no version to infer its quality config from: give both"
                " task (--task) and score_output (--score-output), or register a version first"
            )
        return infer_config(outputs, task=task, score_output=score_output, **fields)

    def _newest_outputs(self, name: str) -> list[tuple[str, str, tuple[int, ...]]] | None:
        """The outputs of the most recently registered version, None without versions."""
        newest = self._call(self._redis.zrange, self.keys.versions(name), -1, -1)
        found = [as_text(v) for v in newest if isinstance(v, bytes | str)]
        if not found:
            return None
        version = found[0]
        raw = self._call(self._redis.hget, self.keys.version(name, version), "signature")
        try:
            return signature_outputs(json.loads(as_text(raw)))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise Rejected(
                f"the signature of version {version!r} of model {name!r} is unreadable: {exc}"
            ) from exc
