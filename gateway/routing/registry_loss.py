"""What the registry lost of what this replica serves, reported once per change.

A registry that answers but has lost what a served route came from (FLUSHALL, a Redis
restarted without persistence, keys deleted or expired) changes nothing served: the route and
the versions its rule named stay, and readiness with them. The loss is reported instead, once
per change: a warning, onnxgate_registry_missing{model} (and onnxgate_registry_epoch_missing
for the whole namespace) and the heartbeat's errors. The models are not imported again from
--models: the bootstrap runs once, as an operator may have removed them on purpose.

One model's rule gone while others remain is the same loss, not a removal: no registry write
removes a rule or a model, so only a wipe, a key deleted or expired behind the registry's back,
or a restore still under way take one away, and none of them asks for the model to stop.

An epoch lower than the read before (the registry wiped, or an older copy of it in its place)
is counted in onnxgate_registry_epoch_rewinds_total and, unless 0, warned about; the rules the
registry holds then are followed like any others.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.routing.table import Route
from registry_client.client import RegistryClient, unregistered_versions
from registry_client.records.rule_documents import RouteRule

__all__ = ["RegistryLosses"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Loss:
    """What the registry lost of a served model: why (as the heartbeat shows it) and the
    versions its last rule named, kept loaded while the rule is gone."""

    reason: str
    kept: tuple[str, ...] = ()


class RegistryLosses:
    """The served models whose rule or versions the registry no longer has, and whether its
    epoch is gone or went back; used by the rule follower's thread only."""

    def __init__(self, registry: RegistryClient, metrics: GatewayMetrics) -> None:
        self._registry = registry
        self._metrics = metrics
        self._lost: dict[str, _Loss] = {}  # served model -> what the registry no longer has
        self._epoch_seen = False  # a non-zero epoch was read: 0 then means it was wiped
        self._epoch_missing = False
        self._last_epoch = 0  # as last read

    def note_epoch(self, epoch: int) -> bool:
        """Report the namespace wiped while its epoch, seen before, reads 0, and count every
        read lower than the one before: every registry write bumps it, so only a lost key
        reads 0 again, and only a wipe or an older copy put in its place read lower. True when
        it went back: revisions are then counted again, and may name other rules."""
        previous, self._last_epoch = self._last_epoch, epoch
        went_back = epoch < previous
        if went_back:
            self._metrics.registry_epoch_rewinds.inc()
        if 0 < epoch < previous:  # a wipe (0) is reported as missing, as long as it lasts
            # Followed like any change: the registry is what every replica, and each one
            # starting, reads, so the rules it holds now are the ones all of them serve.
            where = {"namespace": self._registry.keys.namespace, "previous_epoch": previous,
                     "epoch": epoch}  # fmt: skip
            _log.warning("registry epoch went back: Redis holds an older copy of the registry"
                         " (restored, or a replica that missed writes took over); following"
                         " its rules", extra=where)  # fmt: skip
        self._note_missing(epoch == 0 and self._epoch_seen)
        self._epoch_seen = self._epoch_seen or epoch > 0
        return went_back

    def _note_missing(self, missing: bool) -> None:
        """Report the epoch gone, or written again, once per change."""
        if missing == self._epoch_missing:
            return
        self._epoch_missing = missing
        self._metrics.registry_epoch_missing.set(int(missing))
        if missing:
            _log.warning("registry epoch gone: the namespace was flushed or deleted, or Redis"
                         " restarted without persistence; serving the last good rules",
                         extra={"namespace": self._registry.keys.namespace})  # fmt: skip
        else:
            _log.info("registry epoch written again",
                      extra={"namespace": self._registry.keys.namespace})  # fmt: skip

    def update(
        self,
        served: Mapping[str, Route],
        rules: Mapping[str, RouteRule],
        invalid: Mapping[str, object],
        last_read: Mapping[str, RouteRule],
    ) -> None:
        """Compare what is `served` with the `rules` just read (`last_read`: the read before)
        and report what changed."""
        self._note(self._find(served, rules, invalid, last_read))

    def is_lost(self, model: str) -> bool:
        return model in self._lost

    def applied(self, model: str) -> bool:
        """A new route serves `model`. True when the model was lost: the registry must be read
        again, as the new route may not need what was lost; else its loss series reads 0."""
        if model in self._lost:
            return True
        self._metrics.registry_missing.labels(model).set(0)
        return False

    def with_reasons(self, errors: Mapping[str, str]) -> dict[str, str]:
        """`errors` (model -> why its newest rule is not applied) with each loss appended."""
        merged = dict(errors)
        for model, loss in self._lost.items():
            merged[model] = f"{merged[model]}; {loss.reason}" if model in merged else loss.reason
        return merged

    def kept_versions(self) -> set[tuple[str, str]]:
        """(model, version) of each version a lost rule named: kept loaded while it is gone."""
        return {(m, v) for m, loss in self._lost.items() for v in loss.kept}

    def _find(
        self,
        served: Mapping[str, Route],
        rules: Mapping[str, RouteRule],
        invalid: Mapping[str, object],
        last_read: Mapping[str, RouteRule],
    ) -> dict[str, _Loss]:
        """Each served model whose rule, or a version its served rule names, the registry no
        longer has (an invalid document is not lost: it is reported as invalid)."""
        lost: dict[str, _Loss] = {}
        pairs: list[tuple[str, str]] = []
        for model, route in served.items():
            rule = rules.get(model)
            if rule is not None:
                named = {*route.versions, *(v for v, _ in route.shadows)}
                if rule.revision == route.revision:  # also the versions kept for pins
                    named.update(rule.versions)
                pairs.extend((model, version) for version in sorted(named))
            elif model not in invalid:
                previous, last_rule = self._lost.get(model), last_read.get(model)
                kept = previous.kept if previous else tuple(last_rule.versions if last_rule else ())
                lost[model] = _Loss(f"rule gone from the registry; revision {route.revision}"
                                    " keeps serving", kept)  # fmt: skip
        for model, version in sorted(unregistered_versions(self._registry, pairs)):
            if model not in lost:
                lost[model] = _Loss(f"version {version} gone from the registry; revision"
                                    f" {served[model].revision} keeps serving")  # fmt: skip
        return lost

    def _note(self, lost: dict[str, _Loss]) -> None:
        """Record what the registry lost; log and count each change once."""
        appeared = {m: loss.reason for m, loss in lost.items()
                    if m not in self._lost or self._lost[m].reason != loss.reason}  # fmt: skip
        recovered = sorted(self._lost.keys() - lost.keys())
        self._lost = lost
        for model in appeared:
            self._metrics.registry_missing.labels(model).set(1)
        for model in recovered:
            self._metrics.registry_missing.labels(model).set(0)
        if appeared:
            _log.warning("the registry lost what served models came from; their last good"
                         " rules keep serving", extra={"lost": appeared})  # fmt: skip
        if recovered:
            _log.info("the registry has again what served models came from",
                      extra={"models": recovered})  # fmt: skip
