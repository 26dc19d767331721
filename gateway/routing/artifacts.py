"""Uploaded artifacts fetched from the registry into a local cache keyed by sha256."""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from registry_client.client import RegistryClient
from registry_client.schema import BLOB_SCHEME

__all__ = ["ArtifactCache"]

_log = logging.getLogger(__name__)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _file_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"artifact scheme {parsed.scheme!r} is not supported")
    return Path(url2pathname(parsed.path))


class ArtifactCache:
    """Where each registered artifact's bytes are read from: its file, or for an uploaded
    one a cache file fetched on first use (on a load's thread, within its budget)."""

    def __init__(self, registry: RegistryClient, directory: Path, max_bytes: int) -> None:
        self._registry = registry
        self._directory = directory
        self._max_bytes = max_bytes

    def is_uploaded(self, uri: str) -> bool:
        return uri.startswith(f"{BLOB_SCHEME}:")

    def local_path(self, uri: str, sha256: str) -> Path:
        """The file a load reads (for an uploaded artifact, not fetched yet); ValueError for
        a URI or digest that cannot name one."""
        if not self.is_uploaded(uri):
            return _file_path(uri)
        if not _SHA256.fullmatch(sha256):  # it names a file: nothing else may reach the path
            raise ValueError(f"stored sha256 {sha256[:80]!r}: expected 64 lowercase hex digits")
        return self._directory / f"{sha256}.onnx"

    def fetch(self, sha256: str) -> Path:
        """A local file with the uploaded artifact's bytes.

        The cache is keyed by sha256 and written by rename, and the loader hashes what it
        loads, so a torn or tampered cache file fails the load instead of serving."""
        cached = self.local_path(f"{BLOB_SCHEME}:{sha256}", sha256)
        if cached.is_symlink() or (cached.exists() and not cached.is_file()):
            # Only this process writes here, by rename: anything else was put here to be
            # loaded instead. It is replaced with the registry's bytes, never followed.
            _log.warning("artifact cache entry is not a file of ours; fetching it again",
                         extra={"entry": cached.name})  # fmt: skip
            if cached.is_dir() and not cached.is_symlink():
                raise ValueError(f"artifact cache entry {cached.name} is a directory")
            cached.unlink()
        if not cached.exists():
            # Worker processes share the cache: the name is unique per process and thread.
            partial = cached.with_suffix(f".partial-{os.getpid()}-{threading.get_ident()}")
            partial.write_bytes(self._registry.fetch_blob(sha256, self._max_bytes))
            partial.replace(cached)
        return cached
