"""`gatectl register --upload` of a large file in bounded memory: hashed and uploaded a few
chunks at a time, checked by onnxruntime in a child process, and read back by a gateway as the
same bytes; what was sent is verified against the hash registered, and a child that dies is
reported as such. Against a real redis-server."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
import redis

from registry_client.client import RegistryClient
from registry_client.errors import Rejected
from registry_client.records import artifacts
from registry_client.records.artifact_check import (
    IN_PROCESS_MAX_BYTES,
    check_artifact,
    child_command,
)
from registry_client.schema import BLOB_CHUNK_BYTES
from tests.registry._large_files import file_sha256, run_measured, write_embedding_model
from tests.support import onnx_models

# 31,250,000 rows of four floats: a 500 MB table, the model's only initializer.
LARGE_ROWS = 31_250_000
# What gatectl may grow by for a file of any size: a few chunks in flight, and the pipeline's
# copies of them. Reading the file whole would add 500 MB.
GROWTH_BOUND = 100 << 20


def test_a_500_mb_upload_keeps_gatectl_small_and_the_gateway_reads_the_same_bytes(
    redis_server, tmp_path
):
    small, large = tmp_path / "small.onnx", tmp_path / "large.onnx"
    write_embedding_model(small, rows=16)
    sha256 = write_embedding_model(large, rows=LARGE_ROWS)
    assert large.stat().st_size > 500_000_000
    # The same command on a small file: gatectl's baseline with everything it imports.
    baseline = run_measured(redis_server.url, ["register", "emb", "1", str(small),
                                               "--create-model", "--upload"])  # fmt: skip
    assert baseline.code == 0, baseline.err
    measured = run_measured(redis_server.url, ["register", "emb", "2", str(large), "--upload"])
    assert measured.code == 0, measured.err
    assert measured.err == ""  # not a terminal: no progress drawn
    assert measured.out == f"registered emb version 2 sha256 {sha256}\n"
    assert 0 < baseline.peak_rss and measured.peak_rss < baseline.peak_rss + GROWTH_BOUND, (
        f"gatectl peaked at {measured.peak_rss >> 20} MiB uploading 500 MB, against"
        f" {baseline.peak_rss >> 20} MiB for a small file"
    )
    registry = RegistryClient.from_url(redis_server.url)
    try:
        stored = registry.show_version("emb", "2")
        assert (stored["artifact_uri"], stored["size"]) == (
            f"redis-blob:{sha256}", str(large.stat().st_size),
        )  # fmt: skip
        assert '"name": "ids"' in stored["signature"]  # onnxruntime loaded it, in the child
        fetched = registry.fetch_blob(sha256)  # what a gateway's artifact cache writes
        assert len(fetched) == large.stat().st_size
        assert hashlib.sha256(fetched).hexdigest() == sha256
    finally:
        registry.close()


@pytest.fixture
def raw(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def model_file(tmp_path: Path) -> Path:
    return onnx_models.save(onnx_models.classifier(), tmp_path, "credit", "1")


def test_an_upload_is_chunked_as_gateways_read_it(raw, tmp_path):
    path = tmp_path / "three_chunks.bin"
    path.write_bytes(os.urandom(2 * BLOB_CHUNK_BYTES + 5))
    sha256 = file_sha256(path)
    artifacts.upload_file(raw, "blob", path, sha256, path.stat().st_size)
    assert [len(c) for c in raw.lrange("blob", 0, -1)] == [BLOB_CHUNK_BYTES] * 2 + [5]
    assert raw.ttl("blob") == -1  # the partial's expiry is not the blob's
    assert artifacts.fetch_blob(raw, "blob", sha256, 2**31 - 1) == path.read_bytes()
    assert raw.keys("*") == [b"blob"]


def test_bytes_that_are_not_the_ones_hashed_are_not_stored(raw, tmp_path):
    path = model_file(tmp_path)
    size, sha256 = path.stat().st_size, file_sha256(path)
    changed = "0" * 64
    with pytest.raises(Rejected, match=r"changed while it was uploaded: it is no longer the"):
        artifacts.upload_file(raw, "blob", path, changed, size)
    with pytest.raises(Rejected, match=r"nothing was stored: register it again"):
        artifacts.upload_file(raw, "blob", path, sha256, size - 1)  # the file grew since
    assert raw.keys("*") == []  # no blob, no partial left behind


def test_a_large_file_is_checked_in_a_child_and_its_refusal_is_the_usual_one(
    redis_server, tmp_path
):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(IN_PROCESS_MAX_BYTES + 1))
    registry = RegistryClient.from_url(redis_server.url)
    registry.create_model("credit", actor="ops")
    try:
        with pytest.raises(Rejected, match=r"junk.onnx is not a model onnxruntime can load"):
            registry.register_version("credit", "1", junk, actor="ops", upload=True)
        assert registry.list_versions("credit") == []
    finally:
        registry.close()
    with redis.Redis.from_url(redis_server.url) as raw:
        assert [k for k in raw.keys("*") if b"blob" in k] == []  # refused before the upload


def test_the_child_says_what_the_in_process_check_says(tmp_path):
    path = model_file(tmp_path)
    sha256, size = file_sha256(path), path.stat().st_size
    in_child = check_artifact(path, sha256, path, size, child_command(path, sha256, str(path)))
    assert in_child == check_artifact(path, sha256, path, size)
    assert in_child[0]["inputs"] == [{"name": "input", "type": "tensor(float)", "shape": [-1, 4]}]


def test_a_file_changed_before_the_child_read_it_is_refused(tmp_path):
    path = model_file(tmp_path)
    stale = "1" * 64
    with pytest.raises(Rejected, match=r"changed while it was registered: it no longer hashes"):
        check_artifact(path, stale, path, 1, child_command(path, stale, str(path)))


@pytest.mark.parametrize(
    ("program", "said"),
    [
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
         "the onnxruntime check (a child process) was killed by SIGKILL (out of memory?)"),
        ("import sys; sys.stderr.write('onnxruntime aborted\\n'); sys.exit(3)",
         "the onnxruntime check (a child process) exited with code 3 without an answer:"
         " onnxruntime aborted"),
        ("print('not json')",
         "the onnxruntime check (a child process) exited with code 0 without an answer"),
    ],
)  # fmt: skip
def test_a_child_that_dies_without_an_answer_is_a_clear_refusal(tmp_path, program, said):
    path = model_file(tmp_path)
    with pytest.raises(Rejected) as refused:
        check_artifact(path, "0" * 64, path, 1, [sys.executable, "-c", program])
    assert str(refused.value) == f"artifact {path}: {said}"
