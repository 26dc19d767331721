"""Two gateways following one registry, with every background interval short, model credit
with a baseline (version 1) and a candidate (version 2) at weight 0, and client threads
sending traffic: what rollout tests (and tests of other Redis deployments) drive."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np
import onnx

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from registry_client.rollout.plan import RolloutState
from registry_client.rollout.store import RolloutStore
from tests.support import onnx_models
from tests.support.gateways import eventually, make_gateway
from tests.support.wire import infer_request


class HasUrl(Protocol):
    """A Redis deployment: one server, a Sentinel-watched primary or a Cluster."""

    @property
    def url(self) -> str: ...


INTERVAL = 2.0
FAST = {"rules_poll_seconds": 0.2, "heartbeat_seconds": 0.2, "stats_flush_seconds": 0.2,
        "drift_flush_seconds": 0.2, "rollout_tick_seconds": 0.1, "rollout_lease_seconds": 1.0,
        "shadow_max_cpu_busy": 1.0}  # fmt: skip
# A decision lands at the end of an interval, on data flushed by then: the controller's tick
# and the statistics' flush come on top of the intervals.
SLACK_SECONDS = 1.5
Metadata = tuple[tuple[str, str], ...]
Request = Callable[[np.random.Generator, int], tuple[pb.ModelInferRequest, Metadata]]


def normal_rows(rng: np.random.Generator, _: int) -> tuple[pb.ModelInferRequest, tuple[()]]:
    return infer_request("credit", {"input": rng.standard_normal((1, 4)).astype(np.float32)}), ()


@dataclass
class Traffic:
    """Client threads sending ModelInfer to the gateways in turn; every answer is recorded as
    (wall time, version that served, status)."""

    addresses: list[str]
    make: Request = normal_rows
    threads: int = 4
    pause_seconds: float = 0.002  # leaves the in-process gateways CPU: less latency noise
    records: list[tuple[float, str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _running: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        for index in range(self.threads):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._running.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._running:
            thread.join(timeout=30)

    def _run(self, index: int) -> None:
        rng = np.random.default_rng(index)
        channels = [grpc.insecure_channel(a) for a in self.addresses]
        stubs = [pb_grpc.GRPCInferenceServiceStub(c) for c in channels]
        sent = 0
        while not self._stop.is_set():
            request, metadata = self.make(rng, sent)
            try:
                answer = stubs[sent % len(stubs)].ModelInfer(request, timeout=10,
                                                             metadata=metadata)  # fmt: skip
                self.records.append((time.time(), answer.model_version, "OK"))
            except grpc.RpcError as exc:
                self.records.append((time.time(), "", exc.code().name))
            sent += 1
            self._stop.wait(self.pause_seconds)
        for channel in channels:
            channel.close()

    def first(self, code: str) -> float:
        return min(at for at, _, status in self.records if status == code)


@dataclass
class Rig:
    registry: RegistryClient
    store: RolloutStore
    gateways: list[Gateway]

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{g.grpc_port}" for g in self.gateways]

    def start(self, **plan: Any) -> RolloutState:
        fields: dict[str, Any] = {"model": "credit", "candidate": "2", "steps": (50, 100),
                                     "interval_seconds": INTERVAL, "min_requests": 100}  # fmt: skip
        return self.store.start(None, actor="alice", baseline_from_rule=True, **(fields | plan))

    def wait_until_ended(self, timeout: float) -> RolloutState:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.store.get("credit")
            assert state is not None
            if not state.active:
                return state
            time.sleep(0.05)
        raise AssertionError(f"the rollout did not end in {timeout} s: {self.store.get('credit')}")

    def serving(self, weights: dict[str, int]) -> bool:
        """Every gateway serves exactly these weights."""
        routes = [g.routes.current().routes.get("credit") for g in self.gateways]
        return all(route is not None and route.weights == weights for route in routes)


@contextmanager
def rig(
    redis_server: HasUrl, directory: Path, candidate: onnx.ModelProto,
    baseline: onnx.ModelProto | None = None, gateways: int = 2,
    redis_urls: list[str] | None = None, **overrides: object,
) -> Iterator[Rig]:  # fmt: skip
    """Model credit: version 1 (the baseline) serves everything, version 2 (the candidate)
    is in the rule at weight 0, so both are loaded on every gateway before the rollout.
    `redis_urls`: one gateway per URL (Redis users of their own) instead of `gateways`."""
    registry = RegistryClient.from_url(redis_server.url)
    registry.create_model("credit", actor="ops")
    models = {"1": baseline or onnx_models.classifier(seed=1), "2": candidate}
    for version, model in models.items():
        path = onnx_models.save(model, directory, "credit", version)
        registry.register_version("credit", version, path, actor="ops")
    registry.set_route("credit", [Split("1", 100), Split("2", 0)], actor="ops")
    urls = redis_urls or [redis_server.url] * gateways
    started = [make_gateway(None, redis_url=url, replica_id=f"gw{i}", **(FAST | overrides))
               for i, url in enumerate(urls)]  # fmt: skip
    try:
        ready = Rig(registry, RolloutStore(registry), started)
        eventually(
            lambda: (
                ready.serving({"1": 100})
                and all("2" in g.versions.ready_versions().get("credit", {}) for g in started)
            ),
            timeout=30,
        )
        yield ready
    finally:
        for gateway in started:
            gateway.stop(grace_seconds=1)
        registry.close()
