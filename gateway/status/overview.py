"""Reading what the overview shows: every model's rule, its versions' derived status, the live
replicas serving it and its rollout."""

from __future__ import annotations

import logging
import time

from gateway.status.snapshot import ModelSummary, Overview
from registry_client.cli.rollout_status import status_view
from registry_client.client import RegistryClient
from registry_client.errors import RegistryError, Unreachable
from registry_client.records.leases import lease_holder
from registry_client.rollout.store import RolloutStore
from registry_client.versions.status import derive_statuses, read_versions

__all__ = ["read_overview", "read_summary"]

_log = logging.getLogger("gateway.status")


def read_overview(client: RegistryClient) -> Overview:
    """Every model's summary; Unreachable when Redis does not answer. A model whose records
    cannot be read is listed with the reason, the others still are."""
    models = client.list_models()
    gateways = len(client.gateways())
    return Overview(time.time(), tuple(read_summary(client, name) for name in models), gateways)


def read_summary(client: RegistryClient, model: str) -> ModelSummary:
    try:
        rule = client.get_route(model)
        state = RolloutStore(client).get(model)
        replicas = client.replica_status(model)["replicas"]
        active = (state.plan.baseline, state.plan.candidate) if state and state.active else None
        statuses = derive_statuses(
            read_versions(client, model), rule, active, replicas, client.audit_entries(model)
        )
        rollout = None
        if state is not None:
            leader = client.read_string(client.keys.rollout_leader)
            holder = "" if leader is None else lease_holder(leader.decode(errors="replace"))
            rollout = status_view(state, holder)
    except Unreachable:
        raise
    except (RegistryError, ValueError) as exc:  # one unreadable record: shown, not fatal
        _log.warning("status of a model unreadable", extra={"model": model, "reason": str(exc)})
        return ModelSummary(model, error=str(exc))
    return ModelSummary(model, rule, tuple(statuses), tuple(replicas), rollout)
