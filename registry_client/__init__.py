"""Operators' side of onnxgate: the registry schema (the Redis client arrives with issue 3)."""

from registry_client.schema import NAME_PATTERN, is_valid_name, version_sort_key

__all__ = ["NAME_PATTERN", "is_valid_name", "version_sort_key"]
