"""The shared control-plane library that gatectl and the gateway both use: the registry
schema, its Redis client, the request-statistics and drift-sketch stores and the rollout
records.

Importing the package costs what the client needs (redis-py; numpy and datasketches for the
drift sketches), not onnxruntime: that is imported only to read the signature of a version
being registered.
"""

from __future__ import annotations

from registry_client.client import RegistryClient
from registry_client.errors import Conflict, NotFound, RegistryError, Rejected, Unreachable

__all__ = ["Conflict", "NotFound", "RegistryClient", "RegistryError", "Rejected", "Unreachable"]
