"""Turn an artifact into a READY version: read, hash, create the session, warm it up."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, replace

import numpy as np
import onnxruntime as ort

from gateway.datatypes import BYTES
from gateway.metrics import GatewayMetrics
from gateway.models.batcher import DynamicBatcher
from gateway.models.binding import Binder
from gateway.models.ort_errors import ORT_ERRORS
from gateway.models.signature import Signature, SignatureError, read_signature
from gateway.models.version import LoadedVersion, VersionInfo
from registry_client.repository import VersionSource

__all__ = ["ORT_ERRORS", "LoadError", "LoadOptions", "load_version"]


class LoadError(Exception):
    """Raised when a version cannot be served; the message is its FAILED reason."""


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How sessions are built and guarded."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    max_batch_size: int = 1024
    max_inflight_per_version: int = 64
    # > 0: at most this many requests of a version run at once; up to max_queue_per_version
    # more wait in its queue (then the admission limit is their sum, not max_inflight).
    max_concurrency_per_version: int = 0
    max_queue_per_version: int = 64
    batch_delay_us: int = -1  # dynamic batching: -1 off; else wait at most this long for more
    max_model_bytes: int = 2**31 - 1  # protobuf cannot parse more


def _session_options(options: LoadOptions) -> ort.SessionOptions:
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.log_severity_level = 3  # ORT's own warnings go to stderr, not our log
    return session_options


def _warmup_feeds(signature: Signature) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        shape = tuple(1 if d == -1 else d for d in spec.shape)
        if spec.datatype.name == BYTES:
            feeds[spec.name] = np.full(shape, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=spec.datatype.numpy)
    return feeds


# onnxruntime prefixes its messages with its own source paths; they tell an operator nothing.
_SOURCE_LOCATION = re.compile(r"/onnxruntime_src/\S+:\d+ (\S+::)*\S+\(.*?\) ")
_EXTERNAL_DATA = ("external data", "model_path must not be empty")


def _rejection(exc: Exception) -> str:
    """The FAILED reason for a model onnxruntime would not load."""
    message = str(exc)
    if any(marker in message.lower() for marker in _EXTERNAL_DATA):
        # Loaded from the hashed bytes, a model cannot read files beside it, wherever they
        # point (other directories, absolute paths): only self-contained models are served.
        return (
            "the model keeps tensors in external data files; only self-contained .onnx files"
            " are served (save it with onnx.save_model(..., save_as_external_data=False))"
        )
    return f"onnxruntime rejected the model: {_SOURCE_LOCATION.sub('', message)}"


def load_version(
    source: VersionSource, options: LoadOptions, metrics: GatewayMetrics
) -> LoadedVersion:
    """Load one version; raises LoadError with a reason the operator can act on."""
    started = time.perf_counter()
    try:
        with source.path.open("rb") as artifact:  # never more than the cap, even if it grows
            data = artifact.read(options.max_model_bytes + 1)
    except OSError as exc:
        raise LoadError(f"cannot read artifact: {exc.strerror}") from exc
    if len(data) > options.max_model_bytes:
        raise LoadError(
            f"artifact is larger than --max-model-bytes {options.max_model_bytes}; not loaded"
        )
    sha256 = hashlib.sha256(data).hexdigest()
    if source.sha256 and sha256 != source.sha256:
        raise LoadError(
            f"sha256 mismatch: the registry has {source.sha256[:12]}..., the artifact has"
            f" {sha256[:12]}...; the file changed after it was registered"
        )
    try:
        # From bytes, not the path: the bytes hashed are the bytes loaded.
        session = ort.InferenceSession(
            data, sess_options=_session_options(options), providers=["CPUExecutionProvider"]
        )
    except ORT_ERRORS as exc:
        raise LoadError(_rejection(exc)) from exc
    try:
        signature = read_signature(session.get_inputs(), session.get_outputs())
    except SignatureError as exc:
        raise LoadError(str(exc)) from exc
    try:
        session.run(None, _warmup_feeds(signature))
    except ORT_ERRORS as exc:  # a model that cannot run on a minimal input is not READY
        raise LoadError(f"warm-up run failed: {_SOURCE_LOCATION.sub('', str(exc))}") from exc
    elapsed = time.perf_counter() - started
    info = VersionInfo(source.model, source.version, str(source.path), sha256, elapsed)
    if source.batch_delay_us is not None or source.max_batch_size is not None:
        options = replace(
            options,
            batch_delay_us=options.batch_delay_us if source.batch_delay_us is None
            else source.batch_delay_us,
            max_batch_size=source.max_batch_size or options.max_batch_size,
        )  # fmt: skip
    version_metrics = metrics.for_version(source.model, source.version)
    batcher = None
    if options.batch_delay_us >= 0 and signature.batchable:
        batcher = DynamicBatcher(session, f"{source.model}-{source.version}",
                                 options.max_batch_size, options.batch_delay_us / 1e6,
                                 version_metrics.observe_batch)  # fmt: skip
    return LoadedVersion(
        info=info,
        session=session,
        signature=signature,
        binder=Binder(source.model, signature, options.max_batch_size),
        max_inflight=options.max_concurrency_per_version + options.max_queue_per_version
        if options.max_concurrency_per_version > 0
        else options.max_inflight_per_version,
        metrics=version_metrics,
        batcher=batcher,
        max_concurrency=options.max_concurrency_per_version,
    )
