"""What this build is: the installed versions of onnxgate and of what it serves with, read from
package metadata (importing onnxruntime only to ask would cost a probe or a supervisor a
second)."""

from __future__ import annotations

import platform
from importlib import metadata

__all__ = ["build_info", "installed_version"]


def installed_version(distribution: str) -> str:
    """The distribution's installed version, "unknown" when it is not installed (a checkout
    run without installing it)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def build_info() -> dict[str, str]:
    """onnxgate_build_info's labels, and what `onnxgate --version` says."""
    return {
        "version": installed_version("onnxgate"),
        "python": platform.python_version(),
        "onnxruntime": installed_version("onnxruntime"),
        "grpcio": installed_version("grpcio"),
    }
