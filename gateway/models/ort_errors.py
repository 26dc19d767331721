"""onnxruntime as the gateway uses it: its session options, the exceptions it raises for a
model it cannot load or run, and how their messages read for an operator. Shared by the
loader and the memory probe's child process, so a version is built, and its failure
worded, the same in both."""

from __future__ import annotations

import re

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

__all__ = ["ORT_ERRORS", "rejection_reason", "session_options", "without_source_locations"]

# onnxruntime's own exception types derive from Exception directly; these are the ones a
# corrupt, unsupported or unrunnable model raises.
ORT_ERRORS: tuple[type[Exception], ...] = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoModel,
    ort_state.NoSuchFile,
    ort_state.NotFound,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
    ort_state.EPFail,
    RuntimeError,
    ValueError,
    TypeError,
)


def session_options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Fatal only: what onnxruntime reports as an error reaches our log through the exception
    # it raises (with the request id); its own stderr line would repeat it unstructured, once
    # per failed or terminated run.
    options.log_severity_level = 4
    return options


# onnxruntime prefixes its messages with its own source paths; they tell an operator nothing.
_SOURCE_LOCATION = re.compile(r"/onnxruntime_src/\S+:\d+ (\S+::)*\S+\(.*?\) ")
_EXTERNAL_DATA = ("external data", "model_path must not be empty")


def without_source_locations(message: str) -> str:
    return _SOURCE_LOCATION.sub("", message)


def rejection_reason(message: str) -> str:
    """The FAILED reason for a model onnxruntime would not load."""
    if any(marker in message.lower() for marker in _EXTERNAL_DATA):
        # Loaded from the hashed bytes, a model cannot read files beside it, wherever they
        # point (other directories, absolute paths): only self-contained models are served.
        return (
            "the model keeps tensors in external data files; only self-contained .onnx files"
            " are served (save it with onnx.save_model(..., save_as_external_data=False))"
        )
    return f"onnxruntime rejected the model: {without_source_locations(message)}"
