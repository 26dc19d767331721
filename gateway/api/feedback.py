"""The Feedback service (protos/feedback.proto): labels for earlier predictions, named by their
ids, into the model's label stream in the registry; the join adds them to the quality state
later. It translates and bounds; RegistryClient.put_labels validates and stores.

Not the inference path: a call waits on Redis, on one of `max_calls` threads of its own
(api/server.py's call_threads counts them in), and a call beyond those is refused at once, so
labels never hold a thread or a CPU turn ModelInfer needs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import grpc
import redis

from gateway._proto import feedback_pb2 as fb
from gateway._proto import feedback_pb2_grpc as fb_grpc
from gateway.errors import (
    InvalidInput,
    ModelNotFound,
    NotConfigured,
    RegistryUnavailable,
    TooManyCalls,
)
from registry_client.client import RegistryClient
from registry_client.errors import NotFound, Rejected, Unreachable
from registry_client.quality.labels import Label, label_problem
from registry_client.schema import NAME_RULE, brief_repr, is_valid_name

__all__ = ["MAX_LABELS_PER_CALL", "FeedbackServicer", "labels_of"]

# About 0.5 MB on the wire with 34-character ids, and tens of milliseconds of Python to check
# and append: one call cannot hold the GIL or Redis for long; a client with more sends several.
MAX_LABELS_PER_CALL = 10_000
_WIRE_FIELDS = {"request_id": "id", "value": "value", "weight": "weight"}
_REPLACES_ITSELF = (
    "send the same call again: a label stored twice replaces itself (the join counts it once)"
)


def labels_of(request: fb.PutLabelsRequest) -> list[Label]:
    """The request's labels (weight 0, proto3's unset, is 1); InvalidInput naming the field
    `labels[i].<field>` of the first malformed one, or the bound on labels per call."""
    if len(request.labels) > MAX_LABELS_PER_CALL:
        raise InvalidInput(
            f"labels: {len(request.labels)} in one call; expected at most"
            f" {MAX_LABELS_PER_CALL:,}: send them in several calls"
        )
    labels = [Label(item.id, item.value, item.weight or 1.0) for item in request.labels]
    for index, label in enumerate(labels):
        problem = label_problem(label)
        if problem is not None:
            field, expected = problem
            given = request.labels[index].weight if field == "weight" else getattr(label, field)
            unset = " (0 or unset: 1)" if field == "weight" else ""
            raise InvalidInput(f"labels[{index}].{_WIRE_FIELDS[field]}: {expected}{unset},"
                               f" got {brief_repr(given)}")  # fmt: skip
    return labels


class FeedbackServicer(fb_grpc.FeedbackServicer):
    """PutLabels over the registry client (None: a gateway serving --models without a
    registry, which answers FAILED_PRECONDITION). Thread-safe."""

    def __init__(
        self,
        client: RegistryClient | None,
        max_calls: int,
        hold_thread: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        """`hold_thread()` is entered while a call waits on Redis (CallThreads.holding)."""
        self._hold_thread = hold_thread
        self._client = client
        self._max_calls = max_calls
        self._slots = threading.BoundedSemaphore(max_calls)

    def PutLabels(
        self, request: fb.PutLabelsRequest, context: grpc.ServicerContext
    ) -> fb.PutLabelsResponse:
        client = self._client
        if client is None:
            raise NotConfigured(
                "labels need a registry: this gateway serves --models without one; send them"
                " to a gateway started with --redis-url (or its private Redis, --data-dir), or"
                " store them with `gatectl labels import`"
            )
        model = request.model_name
        if not is_valid_name(model):
            raise InvalidInput(f"model_name: expected {NAME_RULE}, got {brief_repr(model)}")
        labels = labels_of(request)
        # Admission: fail fast, don't queue; a waiting call would hold a thread.
        if not self._slots.acquire(blocking=False):
            raise TooManyCalls(
                f"{self._max_calls} PutLabels calls are storing labels on this gateway, the"
                " most it takes at once (--feedback-max-calls); retry after a moment"
            )
        try:
            with self._hold_thread():
                _check_model(client, model, len(labels))
                return fb.PutLabelsResponse(accepted=_store(client, model, labels))
        finally:
            self._slots.release()


def _check_model(client: RegistryClient, model: str, count: int) -> None:
    """The model exists and says how its predictions are scored: else nothing would join."""
    try:
        if client.model_quality(model) is not None:
            return
        client.show_model(model)
    except NotFound as exc:
        raise ModelNotFound(
            f"model {model!r} is not registered: register it and say how it is scored"
            f" (gatectl model create {model} --task binary|multiclass|regression)"
        ) from exc
    except Rejected as exc:  # a stored config that cannot be read; the message says how to fix
        raise NotConfigured(str(exc)) from exc
    except Unreachable as exc:
        raise RegistryUnavailable(
            f"the registry's Redis is unreachable; none of the {count} labels was stored: retry"
            " with backoff"
        ) from exc
    raise NotConfigured(
        f"model {model!r} has no quality config, so its labels would never be joined: say how"
        f" it is scored first (gatectl model create {model} --task binary|multiclass|regression)"
    )


def _store(client: RegistryClient, model: str, labels: Sequence[Label]) -> int:
    """put_labels, its refusals translated. The labels go in one pipeline of appends: cut off
    by a lost connection, any prefix of them may be stored."""
    try:
        return client.put_labels(model, labels)
    except Unreachable as exc:
        raise RegistryUnavailable(
            f"the registry's Redis became unreachable while the {len(labels)} labels were"
            f" stored: none, some or all of them are; {_REPLACES_ITSELF}"
        ) from exc
    except redis.exceptions.NoPermissionError as exc:  # refused before any was appended
        raise NotConfigured(
            "this gateway's Redis user may not append labels (XADD on the {<namespace>:*}:labels"
            " keys; docs/security.md); none was stored"
        ) from exc
    except Rejected as exc:  # labels_of checked them all; a gap between the two shows here
        raise InvalidInput(str(exc)) from exc
