"""The routes of a gateway serving a model directory without a registry: each model's
highest READY version serves its unpinned requests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from gateway.routing.table import Route, RouteTable
from registry_client.schema import version_sort_key

__all__ = ["routes_for_ready_versions"]


def routes_for_ready_versions(ready: Mapping[str, Iterable[str]]) -> RouteTable:
    """Build the table that sends each model's unpinned requests to its highest version."""
    routes = {}
    for model, versions in ready.items():
        names = list(versions)
        if names:
            routes[model] = Route.of(((max(names, key=version_sort_key), 100),))
    return RouteTable(MappingProxyType(routes))
