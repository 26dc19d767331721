"""Find model versions in a Triton-style repository: DIR/<model>/<version>/model.onnx.

File-system layout only (no Redis): the gateway serves such a directory and the registry
imports one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from registry_client.schema import NAME_PATTERN, is_valid_name

__all__ = ["ARTIFACT_NAME", "VersionSource", "scan_repository"]

ARTIFACT_NAME = "model.onnx"
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VersionSource:
    """Where one version's artifact lies."""

    model: str
    version: str
    path: Path
    sha256: str = ""  # what the registry recorded; empty when there is no registry
    batch_delay_us: int | None = None  # the model's batching settings; None: the gateway's
    max_batch_size: int | None = None


def scan_repository(root: Path) -> list[VersionSource]:
    """List every version under root; badly named folders are logged and skipped."""
    if not root.is_dir():
        raise FileNotFoundError(f"model repository {root} is not a directory")
    found: list[VersionSource] = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if not is_valid_name(model_dir.name):
            _log.warning(
                "skipping model folder %r: names must match %s", model_dir.name, NAME_PATTERN
            )
            continue
        for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
            artifact = version_dir / ARTIFACT_NAME
            if not is_valid_name(version_dir.name):
                _log.warning(
                    "skipping version folder %r of model %r: names must match %s",
                    version_dir.name,
                    model_dir.name,
                    NAME_PATTERN,
                )
            elif artifact.is_file():
                found.append(VersionSource(model_dir.name, version_dir.name, artifact))
            else:
                _log.warning("skipping %s: it has no %s", version_dir, ARTIFACT_NAME)
    return found
