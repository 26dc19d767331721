"""The shared control-plane library that gatectl and the gateway both use: the registry
schema, its Redis client (and `Label`, what put_labels takes), the request-statistics, drift,
prediction and quality stores and the rollout records.

Importing the package costs what the client needs (redis-py; numpy and datasketches for the
drift sketches), not onnxruntime: that is imported only to read the signature of a version
being registered.
"""

from __future__ import annotations

from registry_client.client import RegistryClient
from registry_client.errors import Conflict, NotFound, RegistryError, Rejected, Unreachable
from registry_client.quality.labels import Label

__all__ = [
    "Conflict",
    "Label",
    "NotFound",
    "RegistryClient",
    "RegistryError",
    "Rejected",
    "Unreachable",
]
