"""The exceptions onnxruntime raises for a model it cannot load or run."""

from __future__ import annotations

from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

__all__ = ["ORT_ERRORS"]

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
