"""A version's artifact: the ONNX file read within its size limit, the signature onnxruntime
reads from it, and its bytes kept in Redis as content-addressed chunks (redis-blob:<sha256>)
for gateways on other hosts."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import redis

from registry_client.errors import NotFound, Rejected, redis_unreachable_as_error
from registry_client.schema import BLOB_CHUNK_BYTES

__all__ = [
    "MAX_ARTIFACT_BYTES", "fetch_blob", "file_of", "read_artifact", "signature", "upload_blob",
]  # fmt: skip

MAX_ARTIFACT_BYTES = 2**31 - 1  # protobuf cannot parse a larger model; gateways refuse one


def read_artifact(artifact: Path, max_bytes: int) -> tuple[Path, bytes]:
    """The file's resolved path and its bytes; Rejected when it cannot be read or is over
    `max_bytes` (of which no more than one byte beyond is read)."""
    path = artifact.resolve()
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise Rejected(f"artifact {artifact}: cannot read it ({exc.strerror})") from exc
    if len(data) > max_bytes:
        raise Rejected(
            f"artifact {artifact}: larger than {max_bytes} bytes; gateways would refuse it"
            " (raise --max-artifact-bytes and the gateways' --max-model-bytes together)"
        )
    return path, data


def file_of(uri: str) -> Path:
    """The local file a `file://` artifact URI names; Rejected for any other scheme."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise Rejected(f"artifact {uri!r}: scheme {parsed.scheme!r} is not supported")
    return Path(url2pathname(parsed.path))


def signature(data: bytes, artifact: Path) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs as onnxruntime sees them: name, type, shape (-1 = dynamic)."""
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


def upload_blob(client: redis.Redis, key: str, data: bytes) -> None:
    """Store bytes at `key` (named by their hash), chunked; written whole or not at all: the
    chunks go to a partial key first, renamed into place."""
    with redis_unreachable_as_error():
        if client.exists(key):
            return  # content-addressed: already there
    partial = f"{key}:partial:{uuid.uuid4().hex}"
    with redis_unreachable_as_error(), client.pipeline(transaction=False) as pipe:
        for offset in range(0, max(len(data), 1), BLOB_CHUNK_BYTES):
            pipe.rpush(partial, data[offset : offset + BLOB_CHUNK_BYTES])
        pipe.execute()
    try:
        with redis_unreachable_as_error():
            client.renamenx(partial, key)
    finally:
        with redis_unreachable_as_error():
            client.delete(partial)


def fetch_blob(client: redis.Redis, key: str, sha256: str, max_bytes: int) -> bytes:
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
