"""Reports read from the registry, for every surface to show the same: gatectl prints them,
the gateway's status pages render them."""

from registry_client.reports.comparison import compare_versions

__all__ = ["compare_versions"]
