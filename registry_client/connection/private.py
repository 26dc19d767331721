"""The private Redis a gateway runs when it is given no URL: where it lives, and its URL."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["PRIVATE_SOCKET_NAME", "default_data_dir", "private_redis_url"]

PRIVATE_SOCKET_NAME = "redis.sock"


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Where a gateway started without --redis-url keeps its private Redis; gatectl looks
    for it there too."""
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", ".")) / ".local" / "share")
    return Path(base) / "onnxgate"


def private_redis_url(data_dir: Path) -> str:
    """The unix-socket URL of the private Redis in a data directory."""
    return f"unix://{data_dir / PRIVATE_SOCKET_NAME}"
