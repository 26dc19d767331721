"""The onnxruntime session both peer runtimes open, set up like onnxgate's default."""

from __future__ import annotations

import onnxruntime as ort


def open_session(path: str) -> ort.InferenceSession:
    """A CPU session with 1 intra-op and 1 inter-op thread, sequential execution.

    The same threading as onnxgate's default and bare_server.py's: the comparison is of the
    serving stacks, not of how many cores onnxruntime may use."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
