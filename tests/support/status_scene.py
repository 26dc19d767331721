"""A gateway with everything the status pages show: model credit with a quality config
segmented by region, version 1 serving with a reference profile, version 3 shadowing every
request, a rollout of version 2 that took a step and was paused (so what the pages show
holds still), drifted traffic, and labels joined to predictions."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from registry_client.client import RegistryClient
from registry_client.drift.reference import FeatureReference
from registry_client.quality.task import QualityConfig
from registry_client.records.rule_documents import Shadow, Split
from registry_client.rollout.plan import RolloutState
from registry_client.rollout.store import RolloutStore
from tests.support import onnx_models
from tests.support.gateways import eventually, make_gateway
from tests.support.joined_labels import Row, log_and_label
from tests.support.wire import infer_request

__all__ = ["Scene", "fetch", "start_scene"]

MODEL = "credit"
REGIONS = ("north", "south")
_RNG = np.random.default_rng(7)


@dataclass
class Scene:
    gateway: Gateway
    client: RegistryClient

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.metrics_port}"

    def stop(self) -> None:
        self.gateway.stop(grace_seconds=2)
        self.client.close()


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """GET `url`: status, headers (lower-case names), body; an HTTP error is returned too."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _lower(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers), exc.read().decode()


def _lower(headers: object) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}  # type: ignore[attr-defined]


def _send(address: str, rows: np.ndarray, per_request: int = 50) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for start in range(0, len(rows), per_request):
            stub.ModelInfer(infer_request(MODEL, {"input": rows[start : start + per_request]}))


def _registry(redis_url: str, directory: Path) -> RegistryClient:
    client = RegistryClient.from_url(redis_url)
    config = QualityConfig("binary", "probabilities", 1, segments=("region",),
                           label_deadline_seconds=86400.0)  # fmt: skip
    client.create_model(MODEL, actor="ops", quality=config)
    for version in ("1", "2", "3"):
        model = onnx_models.classifier(seed=int(version))
        client.register_version(MODEL, version, onnx_models.save(model, directory, MODEL, version),
                                actor="ops")  # fmt: skip
    client.set_route(MODEL, [Split("1", 100)], [Shadow("3", 100)], actor="ops")
    training = _RNG.normal(0.0, 1.0, (5_000, 4))
    references = {}
    for column in range(4):
        reference = FeatureReference.from_values(training[:, column])
        assert reference is not None
        references[f"input[{column}]"] = reference
    client.drift.set_reference(MODEL, "1", references, {"source": "training"}, actor="ops")
    return client


def _labels(client: RegistryClient) -> None:
    """200 predictions of versions 1 (primary) and 3 (shadow) in each region, labelled."""
    config = client.model_quality(MODEL)
    assert config is not None
    now = time.time()
    rows = []
    for i in range(400):
        label, region = float(i % 2), REGIONS[(i // 2) % 2]
        # Version 1 misses a fifth of the positives in the south only: a fairness gap.
        missed = region == "south" and i % 5 == 0
        rows.append(Row(f"scene-{i}", int(now) - 200 + i // 4, (region,),
                        {("1", "primary"): 0.3 + 0.4 * label * (not missed),
                         ("3", "shadow"): 0.5 + 0.1 * label}, label))  # fmt: skip
    log_and_label(client, MODEL, config, rows, now)


def _paused_after_a_step(client: RegistryClient, send: Callable[[], None]) -> RolloutState:
    store = RolloutStore(client)
    store.start(None, actor="ops", model=MODEL, candidate="2", baseline="1", steps=(10, 50, 100),
                interval_seconds=1.0, min_requests=20, max_p99_ratio=100.0, max_psi=100.0,
                min_agreement=0.0, reason="try 2")  # fmt: skip

    def stepped() -> bool:
        send()
        state = store.get(MODEL)
        return state is not None and state.step >= 1

    eventually(stepped, timeout=60)
    return store.pause(MODEL, actor="ops", reason="hold for the pages")


def start_scene(redis_url: str, directory: Path, **settings: object) -> Scene:
    """The scene on a fresh registry, with a gateway (status pages refreshing every second)
    whose traffic has been flushed; `settings` override the gateway's."""
    client = _registry(redis_url, directory)
    gateway = make_gateway(
        None, redis_url=redis_url, rules_poll_seconds=0.2, stats_flush_seconds=0.5,
        drift_flush_seconds=0.5, status_refresh_seconds=1.0, shadow_max_cpu_busy=1.0,
        rollout_tick_seconds=0.2, **settings,
    )  # fmt: skip
    address = f"127.0.0.1:{gateway.grpc_port}"
    drifted = _RNG.normal(0.0, 1.0, (3_000, 4)).astype(np.float32)
    drifted[:, 0] += 1.0  # feature 0 moved by a standard deviation

    def send() -> None:
        # Few at a time: paused within 10 requests of its first step, the rollout cannot have
        # the 20 candidate requests a second step needs.
        _send(address, drifted[_RNG.integers(0, 3_000, 10)], per_request=1)

    _paused_after_a_step(client, send)
    _send(address, drifted)  # under the paused rollout's rule: what the pages compare
    _labels(client)
    for flusher in (gateway.stats_flusher, gateway.sketch_flusher):
        assert flusher is not None and flusher.flush()
    return Scene(gateway, client)
