"""Where a registered version's artifact is read from: its file, or for an uploaded one a
local cache, keyed by sha256, fetched from the registry."""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from registry_client.client import RegistryClient
from registry_client.repository import VersionSource
from registry_client.schema import BLOB_SCHEME

__all__ = ["ArtifactCache"]

_log = logging.getLogger(__name__)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _optional_int(value: object) -> int | None:
    return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else None


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

    def source(self, model: str, version: str) -> tuple[VersionSource, Callable[[], Path] | None]:
        """What a load of a registered version reads, and for an uploaded artifact the fetch
        that brings it into the cache first. NotFound or Rejected when the registry cannot
        describe the version, ValueError when its artifact cannot be named."""
        stored = self._registry.show_version(model, version)
        settings = self._registry.show_model(model)
        path = self.local_path(stored["artifact_uri"], stored["sha256"])
        source = VersionSource(
            model, version, path, stored["sha256"],
            batch_delay_us=_optional_int(settings.get("batch_delay_us")),
            max_batch_size=_optional_int(settings.get("max_batch_size")),
        )  # fmt: skip
        fetch = None
        if self.is_uploaded(stored["artifact_uri"]):
            fetch = functools.partial(self.fetch, stored["sha256"])
        return source, fetch

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
