"""One inference request, transport-free: route -> bind inputs -> run the version -> result."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from gateway.drift.recorder import DriftRecorder
from gateway.errors import GatewayError, ModelFailed, ModelNotFound, ModelNotReady
from gateway.metrics.gateway_metrics import UNKNOWN_LABEL, GatewayMetrics
from gateway.models.store import VersionStore
from gateway.models.version import LoadedVersion
from gateway.pipeline.cpu_turns import RequestTurns
from gateway.pipeline.requests import InferRequest, InferResult
from gateway.routing.router import Decision, route
from gateway.routing.table import RouteSource
from gateway.shadow.dispatcher import ShadowDispatcher, ShadowJob

__all__ = ["InferencePipeline"]

T = TypeVar("T")
CANCELLED, DEADLINE_EXCEEDED = "CANCELLED", "DEADLINE_EXCEEDED"


class InferencePipeline:
    """Serves requests from memory only: the route table and the READY versions.

    `code_name` names the status an error will be answered with (api/status.py owns that
    table); it only labels metrics here.
    """

    def __init__(
        self,
        routes: RouteSource,
        versions: VersionStore,
        metrics: GatewayMetrics,
        code_name: Callable[[GatewayError], str],
        shadows: ShadowDispatcher | None = None,
        drift: DriftRecorder | None = None,
        started: Callable[[], bool] = lambda: True,
        turns: RequestTurns | None = None,
    ) -> None:
        """`started` turns true once the first routes are known (versions loaded or rules
        synced); before that, no route means "not yet", not "no such model"."""
        self._started = started
        self._turns = turns
        self._routes = routes
        self._versions = versions
        self._metrics = metrics
        self._code_name = code_name
        self._shadows = shadows
        self._drift = drift

    def resolve(
        self, model: str, pinned_version: str, routing_key: str | None = None
    ) -> tuple[LoadedVersion, Decision]:
        """The version that serves (model, pin, key) now, or ModelNotFound / ModelNotReady."""
        decision = route(self._routes.current(), model, pinned_version, routing_key)
        if decision is None:
            if self._versions.is_loading(model):
                raise ModelNotReady(f"model '{model}' is loading and has no ready version yet")
            if not self._started():
                raise ModelNotReady(f"the gateway is starting and has no route for '{model}' yet")
            raise ModelNotFound(f"Request for unknown model: '{model}' has no available versions")
        return self._versions.get(model, decision.version), decision

    def infer(self, request: InferRequest, finish: Callable[[InferResult], T]) -> T:
        """Run one request on the version its route chooses, count it in the metrics, and
        return finish(result): the caller's encoding, done while the request still holds its
        turn, so no more than the request threads do Python work at once (measured: 12-16%
        fewer requests at concurrency 32 with encoding outside)."""
        try:
            loaded, decision = self.resolve(request.model, request.version, request.routing_key)
        except GatewayError as exc:
            self.count_rejected(request.model, exc)
            raise
        try:
            return self._infer_on(loaded, decision, request, finish)
        except GatewayError as exc:
            exc.version = loaded.version  # for the access log: the version that failed
            raise

    def _infer_on(
        self,
        loaded: LoadedVersion,
        decision: Decision,
        request: InferRequest,
        finish: Callable[[InferResult], T],
    ) -> T:
        metrics = loaded.metrics
        try:
            # Admitted (and waiting in the version's queue) before taking a turn: a request
            # that waits for its version holds no turn that another model could use.
            loaded.admit(request.deadline)
            try:
                turn = self._turns.take(request.deadline) if self._turns is not None else 0
            except GatewayError:
                loaded.release()
                raise
        except GatewayError as exc:
            metrics.failed(self._outcome(request, exc))
            raise
        try:
            try:
                binder = loaded.binder
                feeds = binder.bind_inputs(request.inputs)
                outputs = binder.select_outputs(request.outputs)
                arrays = loaded.run(feeds, outputs.names, request.deadline)
            except ModelFailed as exc:
                metrics.failed(self._outcome(request, exc))
                # The version was sent these inputs: sketched, or a version that fails on a
                # part of its traffic looks as if that part had drifted away.
                if self._drift is not None:
                    self._drift.observe(loaded.model, loaded.version, feeds)
                raise
            except GatewayError as exc:
                metrics.failed(self._outcome(request, exc))
                raise
            finally:
                loaded.release()  # the next in the version's queue may run meanwhile
            if request.still_wanted is None or request.still_wanted():
                metrics.succeeded(time.perf_counter() - request.received)
            else:
                metrics.failed(_gone(request))
            if self._drift is not None:
                self._drift.observe(loaded.model, loaded.version, feeds, outputs.names, arrays)
            if decision.shadows and self._shadows is not None:
                self._mirror(loaded, decision.shadows, feeds, outputs.names, arrays)
            pairs = list(zip(outputs.specs, arrays, strict=True))
            return finish(InferResult(loaded.model, loaded.version, decision.routed_by, pairs))
        finally:
            if self._turns is not None:
                self._turns.give_back(turn)

    def _mirror(
        self,
        primary: LoadedVersion,
        shadow_versions: tuple[str, ...],
        feeds: dict[str, np.ndarray],
        output_names: tuple[str, ...],
        outputs: list[np.ndarray],
    ) -> None:
        """Offer copies to the shadows; never waits, never fails the primary."""
        assert self._shadows is not None
        ready = self._versions.ready_versions().get(primary.model, {})
        for version in shadow_versions:
            shadow = ready.get(version)
            if shadow is not None:
                job = ShadowJob(shadow, primary.version, feeds, output_names, outputs)
                self._shadows.offer(job)

    def _outcome(self, request: InferRequest, exc: GatewayError) -> str:
        """The status a failed request is counted under (see _gone)."""
        if request.still_wanted is not None and not request.still_wanted():
            return _gone(request)
        return self._code_name(exc)

    def count_rejected(self, model: str, exc: GatewayError) -> None:
        """Count a request that failed before a version was chosen."""
        label = model if self._versions.knows_model(model) else UNKNOWN_LABEL
        self._metrics.count_unrouted(label, self._code_name(exc))


def _gone(request: InferRequest) -> str:
    """The status of a request whose caller is no longer there: DEADLINE_EXCEEDED when its
    deadline had passed (the version was too slow for it: that counts against the version),
    else CANCELLED (the caller gave up: that does not)."""
    if request.deadline is not None and time.monotonic() >= request.deadline:
        return DEADLINE_EXCEEDED
    return CANCELLED
