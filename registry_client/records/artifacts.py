"""A version's artifact: the ONNX file hashed in chunks within its size limit, the signature
onnxruntime reads from it, and its bytes kept in Redis as content-addressed chunks
(redis-blob:<sha256>) for gateways on other hosts, uploaded a few chunks at a time.

Registering a file holds no more than a few chunks of it in memory, however large it is;
onnxruntime reads a large one in a child process (artifact_check.py)."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlparse
from urllib.request import url2pathname

import redis

from registry_client.connection import RedisClient
from registry_client.errors import NotFound, Rejected, redis_unreachable_as_error
from registry_client.schema import BLOB_CHUNK_BYTES

__all__ = [
    "MAX_ARTIFACT_BYTES", "SILENT", "Prefixed", "Progress", "fetch_blob", "file_of", "hash_file",
    "read_artifact", "signature", "upload_blob", "upload_file",
]  # fmt: skip

MAX_ARTIFACT_BYTES = 2**31 - 1  # protobuf cannot parse a larger model; gateways refuse one
# Chunks sent per round trip: large enough that the round trips cost nothing next to the
# bytes, small enough that gatectl holds a few MiB of the file at a time.
CHUNKS_PER_ROUND_TRIP = 2
# A partial upload left by a gatectl that was killed expires; each round trip renews it.
PARTIAL_TTL_SECONDS = 600


class Progress(Protocol):
    """Where long work reports how far it is (gatectl draws it: cli/progress.py)."""

    def stage(self, what: str, total: int) -> None:
        """Begin a stage of `total` bytes (0: not measured)."""

    def advance(self, count: int) -> None:
        """`count` more bytes done."""


class _Silent:
    def stage(self, what: str, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass


SILENT: Progress = _Silent()


class Prefixed:
    """`progress` with every stage's name after `prefix` (one version of a directory's)."""

    def __init__(self, progress: Progress, prefix: str) -> None:
        self._progress, self._prefix = progress, prefix

    def stage(self, what: str, total: int) -> None:
        self._progress.stage(f"{self._prefix}{what}", total)

    def advance(self, count: int) -> None:
        self._progress.advance(count)


def _too_large(artifact: Path, max_bytes: int) -> Rejected:
    return Rejected(
        f"artifact {artifact}: larger than {max_bytes} bytes; gateways would refuse it"
        " (raise --max-artifact-bytes and the gateways' --max-model-bytes together)"
    )


def _unreadable(artifact: Path, exc: OSError) -> Rejected:
    return Rejected(f"artifact {artifact}: cannot read it ({exc.strerror or exc})")


def read_artifact(artifact: Path, max_bytes: int) -> tuple[Path, bytes]:
    """The file's resolved path and its bytes; Rejected when it cannot be read or is over
    `max_bytes` (of which no more than one byte beyond is read)."""
    path = artifact.resolve()
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise _unreadable(artifact, exc) from exc
    if len(data) > max_bytes:
        raise _too_large(artifact, max_bytes)
    return path, data


def _chunks(file: BinaryIO, artifact: Path) -> Iterator[bytes]:
    while True:
        try:
            chunk = file.read(BLOB_CHUNK_BYTES)
        except OSError as exc:
            raise _unreadable(artifact, exc) from exc
        if not chunk:
            return
        yield chunk


def hash_file(artifact: Path, max_bytes: int, progress: Progress = SILENT) -> tuple[Path, str, int]:
    """The file's resolved path, sha256 and size, read a chunk at a time; Rejected when it
    cannot be read or is over `max_bytes` (of which no more than a chunk beyond is read)."""
    path = artifact.resolve()
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("rb") as file:
            listed = path.stat().st_size
            if listed > max_bytes:  # refused unread; a file growing as it is read, on the way
                raise _too_large(artifact, max_bytes)
            progress.stage(f"hashing {artifact.name}", listed)
            for chunk in _chunks(file, artifact):
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(artifact, max_bytes)
                digest.update(chunk)
                progress.advance(len(chunk))
    except OSError as exc:
        raise _unreadable(artifact, exc) from exc
    return path, digest.hexdigest(), size


def file_of(uri: str) -> Path:
    """The local file a `file://` artifact URI names; Rejected for any other scheme."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise Rejected(f"artifact {uri!r}: scheme {parsed.scheme!r} is not supported")
    return Path(url2pathname(parsed.path))


def signature(data: bytes, artifact: Path) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs as onnxruntime sees them: name, type, shape (-1 = dynamic).
    Registration calls it through artifact_check.py (in a child process for a large file)."""
    # Imported here: it costs half a second of CPU, and only registering a version needs it.
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except (ort_state.Fail, ort_state.InvalidGraph, ort_state.InvalidProtobuf,
            ort_state.InvalidArgument, ort_state.NotImplemented, RuntimeError) as exc:  # fmt: skip
        raise Rejected(f"artifact {artifact} is not a model onnxruntime can load: {exc}") from exc

    def describe(args: Any) -> list[dict[str, Any]]:
        return [
            {"name": a.name, "type": a.type,
             "shape": [d if isinstance(d, int) and d >= 0 else -1 for d in a.shape]}
            for a in args
        ]  # fmt: skip

    return {"inputs": describe(session.get_inputs()), "outputs": describe(session.get_outputs())}


def _upload(client: RedisClient, key: str, chunks: Iterable[bytes], progress: Progress) -> None:
    """Push `chunks` to a partial key a few per round trip, then rename it to `key`: the blob
    appears whole or not at all, and a partial key left behind expires."""
    partial = f"{key}:partial:{uuid.uuid4().hex}"
    renamed = False
    try:
        with redis_unreachable_as_error(), client.pipeline(transaction=False) as pipe:
            pending: list[int] = []  # sizes of the chunks queued in `pipe`
            pushed = 0

            def send() -> None:
                pipe.expire(partial, PARTIAL_TTL_SECONDS)
                pipe.execute()
                progress.advance(sum(pending))
                pending.clear()

            for chunk in chunks:
                pipe.rpush(partial, chunk)
                pending.append(len(chunk))
                pushed += 1
                if len(pending) == CHUNKS_PER_ROUND_TRIP:
                    send()
            if not pushed:  # an empty blob is one empty chunk: LRANGE tells it from none
                pipe.rpush(partial, b"")
                pending.append(0)
            if pending:
                send()
        # RENAMENX keeps the partial's expiry; PERSIST takes it off the blob. When the blob
        # is there already (uploaded meanwhile, the same bytes), the partial goes.
        with redis_unreachable_as_error(), client.pipeline(transaction=True) as pipe:
            pipe.execute_command("RENAMENX", partial, key)  # a cluster pipeline has no renamenx
            pipe.persist(key)
            renamed = bool(pipe.execute()[0])
    finally:
        if not renamed:
            # After a failure Redis may not answer this either: the partial then expires.
            with contextlib.suppress(redis.RedisError):
                client.delete(partial)


def upload_blob(client: RedisClient, key: str, data: bytes) -> None:
    """Store bytes at `key` (named by their hash), chunked; written whole or not at all: the
    chunks go to a partial key first, renamed into place."""
    with redis_unreachable_as_error():
        if client.exists(key):
            return  # content-addressed: already there
    view = memoryview(data)
    _upload(client, key, (bytes(view[o : o + BLOB_CHUNK_BYTES])
                          for o in range(0, len(data), BLOB_CHUNK_BYTES)), SILENT)  # fmt: skip


def upload_file(
    client: RedisClient, key: str, artifact: Path, sha256: str, size: int,
    progress: Progress = SILENT,
) -> None:  # fmt: skip
    """Store the file's bytes at `key` as upload_blob() does, a few chunks at a time.
    Rejected, nothing stored, when what is read is not the `size` bytes hashing to `sha256`
    that were registered (the file changed since it was hashed)."""
    with redis_unreachable_as_error():
        if client.exists(key):
            return  # content-addressed: already there
    try:
        with artifact.open("rb") as file:
            progress.stage(f"uploading {artifact.name}", size)
            _upload(client, key, _verified(_chunks(file, artifact), sha256, size, artifact),
                    progress)  # fmt: skip
    except OSError as exc:
        raise _unreadable(artifact, exc) from exc


def _verified(chunks: Iterable[bytes], sha256: str, size: int, artifact: Path) -> Iterator[bytes]:
    """`chunks`, then Rejected (before the upload is renamed into place) unless they are
    `size` bytes hashing to `sha256`; a file grown past `size` is refused as soon as it is."""
    digest, read = hashlib.sha256(), 0
    for chunk in chunks:
        read += len(chunk)
        if read > size:
            break
        digest.update(chunk)
        yield chunk
    if read != size or digest.hexdigest() != sha256:
        raise Rejected(f"artifact {artifact} changed while it was uploaded: it is no longer the"
                       f" {size} bytes hashing to {sha256[:12]}... that were checked; nothing"
                       " was stored: register it again")  # fmt: skip


def fetch_blob(client: RedisClient, key: str, sha256: str, max_bytes: int) -> bytes:
    """The bytes uploaded at `key` under their hash; NotFound when absent, Rejected when
    corrupt or over `max_bytes` (of which no more than a chunk beyond is read)."""
    last_chunk = max_bytes // BLOB_CHUNK_BYTES + 1
    with redis_unreachable_as_error():
        chunks = client.lrange(key, 0, last_chunk)
    if not chunks:
        raise NotFound(f"blob {sha256[:12]}... is not in the registry")
    data = b"".join(c if isinstance(c, bytes) else str(c).encode() for c in chunks)
    if len(data) > max_bytes:
        raise Rejected(f"blob {sha256[:12]}... is larger than {max_bytes} bytes")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise Rejected(f"blob {sha256[:12]}... does not hash to its name")
    return data
