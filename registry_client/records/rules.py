"""Routing rules (`{ns}:route:{model}`) and the audit stream they are read back from: writes
staged and queued so other records (a rollout) can change in the same transaction, history
and rollback, and what gateways poll: the epoch, every rule at once, the change hints."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence

from registry_client.connection import Pipeline, Subscription, queue_publish
from registry_client.errors import Conflict, NotFound, Rejected
from registry_client.records.models import ModelRecords
from registry_client.records.rule_documents import (
    MAX_ROUTE_VERSIONS,
    InvalidRule,
    RouteRule,
    Shadow,
    Split,
)
from registry_client.records.schema_gate import SchemaGate
from registry_client.records.values import as_text, timestamp
from registry_client.schema import SchemaError

__all__ = ["AuditEntry", "RuleRecords"]

AuditEntry = dict[str, str]
_AUDIT_PAGE = 500


class RuleRecords(ModelRecords, SchemaGate):
    """Routing rules over the registered versions, their audit and the change signals."""

    def get_route(self, model: str) -> RouteRule | None:
        """The model's rule, or None when it has none."""
        raw = self._call(self._redis.get, self.keys.route(model))
        return None if raw is None else RouteRule.from_json(raw)

    def set_route(
        self, model: str, split: Sequence[Split], shadows: Sequence[Shadow] = (), *,
        actor: str, reason: str = "", sticky: bool = True,
        expected_revision: int | None = None, allow_schema_change: bool = False,
        dry_run: bool = False,
    ) -> RouteRule:  # fmt: skip
        """Replace the model's rule atomically; the result carries the new revision. With
        `dry_run`, every check is made as for the write and the rule it would write returned,
        but nothing is written.

        With expected_revision the write happens only if the stored revision still equals it
        (compare-and-set), else Conflict; without it, a concurrent write is retried on top.
        A version joining the rule must fit the callers of its primary (SchemaGate), unless
        `allow_schema_change` with a reason, which the audit records."""
        candidate = RouteRule(model, tuple(split), tuple(shadows), sticky, reason=reason)
        try:
            candidate.validate()
        except SchemaError as exc:
            raise Rejected(str(exc)) from exc
        return self._write_route(candidate, actor, "route.set", expected_revision,
                                 allow_schema_change, dry_run)  # fmt: skip

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
                # Versions of a directory are served side by side as Triton serves them, each
                # to the callers that pin it: a schema that differs is audited, not refused.
                self.set_route(
                    model, split, actor=actor, expected_revision=0,
                    reason="default rule: highest version, the others pinnable",
                    allow_schema_change=True,
                )  # fmt: skip

    def history(self, model: str, limit: int = 50, actions: str = "") -> list[AuditEntry]:
        """The model's audit entries, newest first: `limit` of those whose action starts
        with `actions` ("" for all). Only the model's own stream is read, page by page, so
        however busy other models keep the registry, each reaches back AUDIT_MAX_ENTRIES."""
        entries: list[AuditEntry] = []
        for entry in self.audit_entries(model):
            if entry.get("action", "").startswith(actions):
                entries.append(entry)
                if len(entries) == limit:
                    break
        return entries

    def audit_entries(self, model: str) -> Iterator[AuditEntry]:
        """The model's audit stream, newest first, read _AUDIT_PAGE entries at a time as the
        iteration goes on (stop early: no more is read)."""
        newest = "+"
        while True:
            page = self._call(self._redis.xrevrange, self.keys.audit(model), newest, "-",
                              count=_AUDIT_PAGE) or []  # fmt: skip
            for entry_id, fields in page:
                entry = {as_text(k): as_text(v) for k, v in (fields or {}).items()}
                yield {"id": as_text(entry_id), **entry}
            if len(page) < _AUDIT_PAGE:
                return
            newest = f"({as_text(page[-1][0])}"  # exclusive: the next page starts below it

    def rollback(
        self, model: str, to_revision: int, *, actor: str, reason: str = "",
        expected_revision: int | None = None, allow_schema_change: bool = False,
        dry_run: bool = False,
    ) -> RouteRule:  # fmt: skip
        """A new revision with the content the rule had at `to_revision` (from the audit),
        through the same schema gate as set_route (and, with `dry_run`, not written)."""
        for entry in self.audit_entries(model):
            if entry.get("action", "").startswith("route.") and entry.get("after"):
                old = RouteRule.from_json(entry["after"])
                if old.revision == to_revision:
                    why = reason or f"rollback to revision {to_revision}"
                    candidate = RouteRule(model, old.split, old.shadows, old.sticky, reason=why)
                    return self._write_route(candidate, actor, "route.rollback",
                                             expected_revision, allow_schema_change,
                                             dry_run)  # fmt: skip
        raise NotFound(f"revision {to_revision} of model {model!r}'s rule is not in the audit")

    def _write_route(
        self, candidate: RouteRule, actor: str, action: str, expected_revision: int | None,
        allow_schema_change: bool, dry_run: bool = False,
    ) -> RouteRule:  # fmt: skip
        def write(pipe: Pipeline) -> RouteRule:
            current, new = self.stage_route(pipe, candidate, actor, expected_revision)
            overridden = self.gate_rule(pipe, current, new, allow_schema_change, new.reason)
            if dry_run:  # no MULTI: the transaction ends with the checks
                return new
            pipe.multi()
            self.queue_route(pipe, current, new, actor, action)
            self.queue_schema_override(pipe, actor, new.model, overridden, new.reason)
            return new

        return self._transaction(self.route_keys(candidate), write,
                                 retry=expected_revision is None)  # fmt: skip

    def route_keys(self, candidate: RouteRule) -> list[str]:
        """The keys a write of `candidate` must WATCH: the rule and the versions it names."""
        model = candidate.model
        return [self.keys.route(model), *(self.keys.version(model, v) for v in candidate.versions)]

    def stage_route(
        self, pipe: Pipeline, candidate: RouteRule, actor: str,
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
            status = as_text(pipe.hget(self.keys.version(model, version), "status"))
            if not status:
                raise NotFound(f"version {version!r} of model {model!r} is not registered")
            if status == "retired":
                raise Rejected(f"version {version!r} of model {model!r} is retired")
        new = RouteRule(
            model, candidate.split, candidate.shadows, candidate.sticky,
            revision=revision + 1, updated_by=actor, updated_at=timestamp(),
            reason=candidate.reason,
        )  # fmt: skip
        return current, new

    def queue_route(
        self, pipe: Pipeline, current: RouteRule | None, new: RouteRule,
        actor: str, action: str,
    ) -> None:  # fmt: skip
        """After MULTI: write the rule staged by stage_route, audit it and publish the hint."""
        pipe.set(self.keys.route(new.model), new.to_json())
        before = None if current is None else current.to_json()
        self._audit(pipe, actor, action, new.model, before, new.to_json(), new.reason)
        hint = json.dumps({"model": new.model, "revision": new.revision})
        queue_publish(pipe, self.keys.events, hint)

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

    def events(self) -> Subscription:
        """A subscription to the change hints on `{ns}:events` (hints only: poll the epoch)."""
        with self._connection():
            return Subscription(self._redis, self.keys.events)
