"""Large inputs for the streaming tests, written a piece at a time (the test process never holds
one whole), and gatectl run as its own process with its peak memory sampled from /proc."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.support.gateways import REPO_ROOT

_PIECE = 1 << 20
_LENGTH_DELIMITED = 2  # protobuf's wire type of messages and bytes
# Field numbers in onnx.proto: ModelProto.graph, GraphProto.initializer, TensorProto.raw_data.
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9
GATECTL = [
    sys.executable,
    "-c",
    "from registry_client.cli.main import main; raise SystemExit(main())",
]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, length: int) -> bytes:
    """The key and length of a length-delimited field whose `length` bytes follow."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(length)


def write_embedding_model(path: Path, rows: int, width: int = 4) -> str:
    """An embedding lookup, ids INT64 [N] -> Gather -> vectors FP32 [N, width], over one
    table of rows x width floats (16 bytes a row at width 4): written as protobuf by hand, the
    table's bytes a MiB at a time, each MiB distinct. Returns the file's sha256."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["vectors"], axis=0)],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["N", width])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    table = TensorProto(name="table", data_type=TensorProto.FLOAT, dims=[rows, width])
    small = onnx.ModelProto()
    small.CopyFrom(model)
    small.graph.initializer.append(numpy_helper.from_array(np.zeros((1, width), np.float32),
                                                           "table"))  # fmt: skip
    onnx.checker.check_model(small)  # the same model but for the table's length
    model.ClearField("graph")  # written below, the table appended to it
    table_bytes = rows * width * 4
    tensor_head = table.SerializeToString() + _field(_TENSOR_RAW_DATA, table_bytes)
    graph_head = graph.SerializeToString()
    initializer_head = _field(_GRAPH_INITIALIZER, len(tensor_head) + table_bytes)
    graph_length = len(graph_head) + len(initializer_head) + len(tensor_head) + table_bytes
    digest = hashlib.sha256()
    pattern = np.random.default_rng(7).integers(0, 255, _PIECE, dtype=np.uint8).tobytes()
    with path.open("wb") as file:

        def put(data: bytes) -> None:
            digest.update(data)
            file.write(data)

        put(model.SerializeToString() + _field(_MODEL_GRAPH, graph_length))
        put(graph_head + initializer_head + tensor_head)
        for number, offset in enumerate(range(0, table_bytes, _PIECE)):
            piece = number.to_bytes(8, "little") + pattern[8:]
            put(piece[: min(_PIECE, table_bytes - offset)])
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while piece := file.read(_PIECE):
            digest.update(piece)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Measured:
    """A gatectl run: exit code, output, and its own peak resident memory (VmHWM, bytes)."""

    code: int
    out: str
    err: str
    peak_rss: int


def _peak_rss(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # it has exited
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None  # a zombie: its memory is gone


def run_measured(url: str, argv: Sequence[str], timeout: float = 120) -> Measured:
    """`gatectl --redis-url URL ARGV` as a process of its own, its /proc/PID/status read every
    20 ms while it runs: the peak is the last VmHWM read (the kernel's high-water mark of the
    process's resident memory, not its children's)."""
    peak = 0
    with subprocess.Popen(
        [*GATECTL, "--redis-url", url, "--actor", "alice", *argv], cwd=REPO_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "USER": "alice"},
    ) as process:  # fmt: skip
        out_file, err_file = process.stdout, process.stderr
        assert out_file is not None and err_file is not None
        while True:
            peak = max(peak, _peak_rss(process.pid) or 0)
            try:
                process.wait(timeout=0.02)  # waits for the exit; each timeout is a sample
                break
            except subprocess.TimeoutExpired:
                continue
        out, err = out_file.read().decode(), err_file.read().decode()
    return Measured(process.returncode, out, err, peak)
