"""Operators' side of onnxgate: the registry schema, its Redis client and gatectl."""

from registry_client.schema import NAME_PATTERN, is_valid_name, version_sort_key

__all__ = ["NAME_PATTERN", "is_valid_name", "version_sort_key"]
