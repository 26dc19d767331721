"""A version's evaluation record, the `evaluation` field of `{ns}:version:{model}:{version}`:
stored by `gatectl evaluate`, audited, read by rollouts and quality events."""

from __future__ import annotations

from registry_client.connection import Pipeline
from registry_client.errors import NotFound, Rejected
from registry_client.quality.evaluation import Evaluation
from registry_client.records.base import RegistryBase
from registry_client.records.values import as_text, checked_name

__all__ = ["EvaluationRecords"]


class EvaluationRecords(RegistryBase):
    """Storing and reading versions' evaluations."""

    def record_evaluation(
        self, model: str, version: str, evaluation: Evaluation, *, actor: str,
        dry_run: bool = False,
    ) -> None:  # fmt: skip
        """Store `evaluation` on the version (replacing an earlier one); NotFound for a
        version that is not registered. With `dry_run`, the check is made, nothing stored."""
        key = self.keys.version(checked_name(model, "model"), checked_name(version, "version"))
        document = evaluation.to_json()

        def write(pipe: Pipeline) -> None:
            if not pipe.hget(key, "status"):
                raise NotFound(f"version {version!r} of model {model!r} is not registered")
            if dry_run:  # no MULTI: the transaction ends with the check
                return
            pipe.multi()
            pipe.hset(key, "evaluation", document)
            summary = {"version": version, "rows": evaluation.rows,
                       "data_sha256": evaluation.data_sha256}  # fmt: skip
            self._audit(pipe, actor, "version.evaluation", model, None, summary, "")

        self._transaction([key], write, retry=True)

    def evaluation(self, model: str, version: str) -> Evaluation | None:
        """The version's evaluation, None when it has none (or is not registered); Rejected
        naming the version when the stored one cannot be read."""
        key = self.keys.version(checked_name(model, "model"), checked_name(version, "version"))
        raw = self._call(self._redis.hget, key, "evaluation")
        if raw is None:
            return None
        try:
            return Evaluation.from_json(as_text(raw))
        except Rejected as exc:
            raise Rejected(f"the evaluation of {model} {version} is unreadable: {exc}") from exc
