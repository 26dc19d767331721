"""Retiring a version and bringing it back: the one status an operator sets by hand (the
`status` field of `{ns}:version:{model}:{version}`, `registered` or `retired`). Every other
status is derived from the rule, the rollout and the replicas (registry_client/versions)."""

from __future__ import annotations

from registry_client.connection import Pipeline
from registry_client.errors import NotFound, Rejected
from registry_client.records.rule_documents import RouteRule
from registry_client.records.rules import RuleRecords
from registry_client.records.values import as_text, checked_name
from registry_client.schema import validate_reason

__all__ = ["VersionLifecycle"]


class VersionLifecycle(RuleRecords):
    """Retire and unretire versions, audited. A retired version cannot be routed to."""

    def retire_version(
        self, model: str, version: str, *, actor: str, reason: str = "", dry_run: bool = False
    ) -> bool:
        """Retire a version; False when it was retired already. Rejected, naming the rule,
        while the model's rule routes or mirrors to it: route it away first. With `dry_run`,
        every check is made and whether it would change returned; nothing is written."""
        return self._set_retired(model, version, True, actor, reason, dry_run)

    def unretire_version(
        self, model: str, version: str, *, actor: str, reason: str = "", dry_run: bool = False
    ) -> bool:
        """Make a retired version routable again; False when it was not retired. `dry_run`
        as for retire_version()."""
        return self._set_retired(model, version, False, actor, reason, dry_run)

    def _set_retired(
        self, model: str, version: str, retired: bool, actor: str, reason: str, dry_run: bool
    ) -> bool:
        key = self.keys.version(checked_name(model, "model"), checked_name(version, "version"))
        route = self.keys.route(model)
        validate_reason(reason)
        wanted = "retired" if retired else "registered"

        def write(pipe: Pipeline) -> bool:
            before = as_text(pipe.hget(key, "status"))
            if not before:
                raise NotFound(f"version {version!r} of model {model!r} is not registered")
            if (before == "retired") == retired:
                return False
            raw = pipe.get(route)
            if retired and raw is not None:
                rule = RouteRule.from_json(raw)
                if version in rule.versions:
                    raise Rejected(
                        f"version {version!r} of model {model!r} is in its rule (revision"
                        f" {rule.revision}: {_describe(rule)}); route it away first"
                        " (gatectl route set)"
                    )
            if dry_run:  # no MULTI: the transaction ends with the checks
                return True
            pipe.multi()
            pipe.hset(key, "status", wanted)
            action = "version.retire" if retired else "version.unretire"
            self._audit(pipe, actor, action, model, {"version": version, "status": before},
                        {"version": version, "status": wanted}, reason)  # fmt: skip
            return True

        return self._transaction([key, route], write, retry=True)


def _describe(rule: RouteRule) -> str:
    split = " ".join(f"{s.version}={s.weight:g}" for s in rule.split)
    shadows = " ".join(f"shadow {s.version}={s.percent:g}%" for s in rule.shadows)
    return f"{split} {shadows}".strip()
