"""One inference request, transport-free: route -> bind inputs -> run the version -> result.

The pipeline counts every request's outcome, once: in its version's metrics when a version was
chosen, else as unrouted. Failures are domain errors (gateway/errors.py); the api layer names
the label each is counted under, as it names the status each is answered with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType

import numpy as np

from gateway.drift.recorder import DriftRecorder
from gateway.errors import (
    Cancelled,
    DeadlineExceeded,
    GatewayError,
    ModelFailed,
    ModelNotFound,
    ModelNotReady,
)
from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.metrics.versions import PRIMARY, UNKNOWN_LABEL
from gateway.models.store import VersionStore
from gateway.models.version import LoadedVersion
from gateway.pipeline.cpu_turns import RequestTurns
from gateway.pipeline.requests import InferRequest, InferResult
from gateway.quality.recorder import PredictionRecorder, ShadowPrediction
from gateway.routing.router import Decision, route
from gateway.routing.table import RouteSource
from gateway.shadow.dispatcher import ShadowDispatcher, ShadowJob

__all__ = ["InferencePipeline", "Serving"]


class InferencePipeline:
    """Serves requests from memory only: the route table and the READY versions. Each
    request is served in a Serving block."""

    def __init__(
        self,
        routes: RouteSource,
        versions: VersionStore,
        metrics: GatewayMetrics,
        outcome_label: Callable[[GatewayError], str],
        shadows: ShadowDispatcher | None = None,
        drift: DriftRecorder | None = None,
        started: Callable[[], bool] = lambda: True,
        turns: RequestTurns | None = None,
        predictions: PredictionRecorder | None = None,
        hold_thread: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        """`outcome_label(error)` is the metric label of a request that ended in `error` (the
        api layer decides it). `started` turns true once the first routes are known (versions
        loaded or rules synced); before that, no route means "not yet", not "no such model".
        A request waits in its version's queue or for its batch in `hold_thread()`
        (CallThreads.holding), so that waiting requests do not take the request threads."""
        self._hold_thread = hold_thread
        self._started = started
        self._turns = turns
        self._routes = routes
        self._versions = versions
        self._metrics = metrics
        self._outcome_label = outcome_label
        self._shadows = shadows
        self._drift = drift
        self._predictions = predictions

    def resolve(
        self, model: str, pinned_version: str, routing_key: str | None = None
    ) -> tuple[LoadedVersion, Decision]:
        """The version that serves (model, pin, key) now, or ModelNotFound / ModelNotReady."""
        decision = route(self._routes.current(), model, pinned_version, routing_key)
        if decision is None:
            raise self._no_route(model)
        return self._versions.get(model, decision.version), decision

    def serving(self, model: str) -> Serving:
        """A request for `model`, to be served in a with-block (see Serving)."""
        # Fields set here, not by a Serving.__init__: CPython 3.11 runs an __init__ in an
        # eval loop of its own, a cost on every request.
        serving = Serving()
        serving._pipeline = self
        serving._model = model
        serving._version = None
        serving._turn = None
        return serving

    def _no_route(self, model: str) -> GatewayError:
        """Why `model` has no route: not yet (loading, or the gateway is starting), or none."""
        if self._versions.is_loading(model):
            return ModelNotReady(f"model '{model}' is loading and has no ready version yet")
        if not self._started():
            return ModelNotReady(f"the gateway is starting and has no route for '{model}' yet")
        return ModelNotFound(f"Request for unknown model: '{model}' has no available versions")

    def _mirror(
        self,
        primary: LoadedVersion,
        decision: Decision,
        output_names: tuple[str, ...],
        feeds: dict[str, np.ndarray],
        outputs: list[np.ndarray],
        logged: ShadowPrediction | None,
    ) -> None:
        """Offer copies to the decision's shadows; never waits, never fails the primary."""
        assert self._shadows is not None
        ready = self._versions.ready_versions().get(primary.model, {})
        for version in decision.shadows:
            shadow = ready.get(version)
            if shadow is not None:
                job = ShadowJob(shadow, primary.version, output_names, feeds, outputs, logged,
                                decision.revision)  # fmt: skip
                self._shadows.offer(job)

    def _log_prediction(
        self, request: InferRequest, loaded: LoadedVersion, score_at: int,
        arrays: list[np.ndarray], mirrored: bool,
    ) -> ShadowPrediction | None:  # fmt: skip
        """Queue the primary's prediction for the log (an append); when it is mirrored, what
        its shadows need to log theirs under the same id."""
        predictions = self._predictions
        assert predictions is not None
        predictions.observe(loaded.model, loaded.version, PRIMARY, request.request_id,
                            request.parameters, request.metadata, arrays[score_at])  # fmt: skip
        if not mirrored:
            return None
        return ShadowPrediction(predictions, request.request_id, request.parameters,
                                request.metadata, score_at)  # fmt: skip

    def _outcome(self, request: InferRequest, exc: GatewayError) -> str:
        """The label a failed request is counted under (see _gone)."""
        if request.still_wanted is not None and not request.still_wanted():
            return self._outcome_label(_gone(request))
        return self._outcome_label(exc)

    def _count_unrouted(self, model: str, exc: GatewayError) -> None:
        """Count a request that failed before a version was chosen."""
        label = model if self._versions.knows_model(model) else UNKNOWN_LABEL
        self._metrics.count_unrouted(label, self._outcome_label(exc))


class Serving:
    """One request's stay in a pipeline, from before it is decoded to after its response is
    encoded; a context manager from InferencePipeline.serving(), entered once:

        with pipeline.serving(model) as serving:
            response = encode(serving.infer(decode(request)))

    A domain error that leaves the block is counted as unrouted when no version was chosen
    yet (a request that cannot be decoded, or routed); one raised later was counted by infer()
    and is given the version's name, for the access log. The CPU turn infer() takes is held
    until the block ends, so that the response is encoded in it: no more than the request
    threads do Python work at once (measured: 12-16% fewer requests at concurrency 32 with
    encoding outside the turn).

    It is part of the pipeline and works on the pipeline's parts directly. It is on every
    request's path, so kept cheap: a small class rather than @contextmanager (no generator),
    no __init__ (see serving()), and resolve()'s few lines repeated in infer().
    """

    __slots__ = ("_model", "_pipeline", "_turn", "_version")
    _pipeline: InferencePipeline
    _model: str
    _version: str | None  # the version chosen, once routed
    _turn: int | None  # the CPU turn held, if any

    def __enter__(self) -> Serving:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        pipeline = self._pipeline
        if self._turn is not None:
            assert pipeline._turns is not None
            pipeline._turns.give_back(self._turn)
        if error is not None and isinstance(error, GatewayError):  # no isinstance() if served
            if self._version is None:
                pipeline._count_unrouted(self._model, error)
            else:
                error.version = self._version  # the version that failed it

    def infer(self, request: InferRequest) -> InferResult:
        """Run the request on the version its route chooses and count its outcome there."""
        pipeline = self._pipeline
        model = request.model  # what resolve() does, inlined
        decision = route(pipeline._routes.current(), model, request.version, request.routing_key)
        if decision is None:
            raise pipeline._no_route(model)
        loaded = pipeline._versions.get(model, decision.version)
        self._version = loaded.version
        metrics = loaded.metrics
        revision = decision.revision  # counted with the outcome: which rule sent it here
        try:
            # Admitted (and waiting in the version's queue) before taking a turn: a request
            # that waits for its version holds no turn that another model could use.
            loaded.admit(request.deadline, hold=pipeline._hold_thread)
            if pipeline._turns is not None:
                try:
                    self._turn = pipeline._turns.take(request.deadline)
                except GatewayError:
                    loaded.release()
                    raise
        except GatewayError as exc:
            metrics.failed(pipeline._outcome(request, exc), revision)
            raise
        drift = pipeline._drift
        # The output a logged model's scores are read from: run even when not asked for.
        predictions = pipeline._predictions
        score = None if predictions is None else predictions.score_output(model)
        try:
            binder = loaded.binder
            feeds = binder.bind_inputs(request.inputs)
            outputs = binder.select_outputs(request.outputs)
            names = outputs.names
            if score is not None and score not in names:
                names = (*names, score)
            arrays = loaded.run(names, feeds, request.deadline, hold=pipeline._hold_thread)
        except ModelFailed as exc:
            metrics.failed(pipeline._outcome(request, exc), revision)
            # The version was sent these inputs: sketched, or a version that fails on a
            # part of its traffic looks as if that part had drifted away.
            if drift is not None:
                drift.observe(loaded.model, loaded.version, feeds)
            raise
        except GatewayError as exc:
            metrics.failed(pipeline._outcome(request, exc), revision)
            raise
        finally:
            loaded.release()  # the next in the version's queue may run meanwhile
        if request.still_wanted is None or request.still_wanted():
            metrics.succeeded(time.perf_counter() - request.received, revision)
        else:
            metrics.failed(pipeline._outcome_label(_gone(request)), revision)
        shadow_log = None
        if score is not None:
            shadow_log = pipeline._log_prediction(request, loaded, names.index(score), arrays,
                                                  bool(decision.shadows))  # fmt: skip
        if drift is not None:
            drift.observe(loaded.model, loaded.version, feeds, outputs.names, arrays)
        if decision.shadows and pipeline._shadows is not None:
            pipeline._mirror(loaded, decision, names, feeds, arrays, shadow_log)
        if len(arrays) != len(outputs.specs):  # the score output was run for the log only
            arrays = arrays[: len(outputs.specs)]
        pairs = list(zip(outputs.specs, arrays, strict=True))
        return InferResult(loaded.model, loaded.version, decision.routed_by, pairs)


def _gone(request: InferRequest) -> GatewayError:
    """The outcome of a request whose caller is no longer there: DeadlineExceeded when its
    deadline had passed (the version was too slow for it: that counts against the version),
    else Cancelled (the caller gave up: that does not)."""
    if request.deadline is not None and time.monotonic() >= request.deadline:
        return DeadlineExceeded("the deadline passed while the request was served")
    return Cancelled("the caller went away while the request was served")
