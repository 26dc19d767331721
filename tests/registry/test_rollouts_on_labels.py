"""Rollouts gated on real labels, end to end: a real gateway serving real traffic logs its
primary's and its shadow's predictions, a labeller gives the labels of answered requests a
moment later (as a feedback service would), the gateway's joiner joins them, and its rollout
controller judges the candidate on them. A shadow candidate less accurate than the baseline is
rolled back without ever being given a caller; one as accurate is promoted through every step.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from registry_client.client import RegistryClient
from registry_client.quality.labels import Label
from registry_client.quality.task import QualityConfig
from registry_client.records.rule_documents import Split
from registry_client.rollout.plan import RolloutState
from registry_client.rollout.store import RolloutStore
from tests.support import onnx_models
from tests.support.gateways import eventually, make_gateway
from tests.support.redis_server import RedisServer
from tests.support.wire import infer_request

CONFIG = QualityConfig("binary", "probabilities", 1, segments=("gender",))
INTERVAL = 2.0
FAST = {"rules_poll_seconds": 0.2, "heartbeat_seconds": 0.2, "stats_flush_seconds": 0.2,
        "drift_flush_seconds": 0.2, "rollout_tick_seconds": 0.1, "rollout_lease_seconds": 1.0,
        "shadow_max_cpu_busy": 1.0, "prediction_hold_seconds": 0.2,
        "prediction_flush_seconds": 0.1, "label_join_seconds": 0.1}  # fmt: skip
# The label gates of both tests: only accuracy and coverage are what they are about (the
# segment is drawn at random, so its fairness gap is noise, bounded well below 0.5).
GATES = {"max_auc_drop": 0.05, "max_fairness_gap": 0.5, "min_label_coverage": 0.3,
         "min_labels": 50, "label_wait_seconds": 60.0}  # fmt: skip


@dataclass
class Traffic:
    """Callers with request ids and a gender segment; each answer's label (the class the
    answer gives, flipped for one in ten: the world is noisier than the model) is given a
    moment later, in batches."""

    address: str
    registry: RegistryClient
    answered: list[tuple[str, str]] = field(default_factory=list)  # (version, status)
    _labels: list[Label] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        self._threads = [threading.Thread(target=self._call, args=(i,), daemon=True)
                         for i in range(3)]  # fmt: skip
        self._threads.append(threading.Thread(target=self._label, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _call(self, index: int) -> None:
        rng = np.random.default_rng(index)
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            sent = 0
            while not self._stop.is_set():
                request_id = f"c{index}-{sent}"
                request = infer_request("credit",
                                        {"input": rng.standard_normal((1, 4)).astype(np.float32)},
                                        request_id=request_id)  # fmt: skip
                request.parameters["segment.gender"].string_param = "FM"[int(rng.integers(2))]
                sent += 1
                try:
                    answer = stub.ModelInfer(request, timeout=10)
                except grpc.RpcError as exc:
                    self.answered.append(("", exc.code().name))
                    continue
                self.answered.append((answer.model_version, "OK"))
                positive = float(np.frombuffer(answer.raw_output_contents[0], np.float32)[1])
                label = int(positive >= 0.5) ^ int(rng.random() < 0.1)
                with self._lock:
                    self._labels.append(Label(request_id, label))
                self._stop.wait(0.003)

    def _label(self) -> None:
        while not self._stop.wait(0.3):
            with self._lock:
                batch, self._labels = self._labels, []
            if batch:
                self.registry.put_labels("credit", batch)


@contextmanager
def rig(redis_server: RedisServer, directory: Path, candidate: onnx.ModelProto
        ) -> Iterator[tuple[RegistryClient, RolloutStore, Gateway]]:  # fmt: skip
    """Model credit with a quality config: version 1 serves everything, version 2 is in the
    rule at weight 0 (loaded before the rollout)."""
    registry = RegistryClient.from_url(redis_server.url)
    registry.create_model("credit", actor="ops", quality=CONFIG)
    for version, model in (("1", onnx_models.classifier(seed=1)), ("2", candidate)):
        path = onnx_models.save(model, directory, "credit", version)
        registry.register_version("credit", version, path, actor="ops")
    registry.set_route("credit", [Split("1", 100), Split("2", 0)], actor="ops")
    gateway = make_gateway(None, redis_url=redis_server.url, replica_id="gw0", **FAST)
    try:
        eventually(lambda: "2" in gateway.versions.ready_versions().get("credit", {}), 30)
        yield registry, RolloutStore(registry), gateway
    finally:
        gateway.stop(grace_seconds=1)
        registry.close()


def _ended(store: RolloutStore, timeout: float) -> RolloutState:
    deadline = time.monotonic() + timeout
    while (state := store.get("credit")) is not None and state.active:
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    assert state is not None
    return state


def _start(store: RolloutStore, **plan: Any) -> RolloutState:
    fields: dict[str, Any] = {"model": "credit", "candidate": "2", "steps": (50, 100),
                                 "interval_seconds": INTERVAL, "min_requests": 50,
                                 "shadow_first_seconds": INTERVAL, "max_psi": 100.0,
                                 "min_p99_increase_ms": 25.0, **GATES}  # fmt: skip
    return store.start(None, actor="alice", baseline_from_rule=True, **(fields | plan))


def test_a_less_accurate_shadow_is_rolled_back_without_ever_serving(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # Its two class scores swapped on half the rows: it answers the other class there.
    worse = onnx_models.disagreeing_classifier(seed=1, disagree_share=0.5)
    with rig(redis_server, tmp_path, worse) as (registry, store, gateway):
        with Traffic(f"127.0.0.1:{gateway.grpc_port}", registry) as traffic:
            # Agreement would catch it too: this test is about its labels.
            assert _start(store, min_agreement=0.0).status == "shadowing"
            state = _ended(store, 12 * INTERVAL + 20)
    assert state.status == "rolled_back", state.last_decision
    assert "auc_drop" in str(state.last_decision["reason"])
    auc = next(c for c in state.last_checks if c["name"] == "auc_drop")
    assert auc["result"] == "fail" and float(auc["value"]) > 0.05
    # It never served: every rule the rollout wrote gave it weight 0, and no caller got it.
    for entry in registry.history("credit", limit=100):
        if entry["action"] == "route.set":
            split = json.loads(entry["after"])["split"]
            assert all(s["weight"] == 0 for s in split if s["version"] == "2"), entry
    assert {version for version, status in traffic.answered if status == "OK"} == {"1"}
    actions = [e["action"] for e in reversed(store.history("credit", limit=100))]
    assert "rollout.advance" not in actions and actions[-1] == "rollout.rollback"


def test_a_shadow_as_accurate_as_the_baseline_is_promoted_on_its_labels(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with rig(redis_server, tmp_path, onnx_models.classifier(seed=1)) as (registry, store, gw):
        with Traffic(f"127.0.0.1:{gw.grpc_port}", registry):
            _start(store)
            state = _ended(store, 20 * INTERVAL + 30)
    assert state.status == "promoted", state.last_decision
    checks = {c["name"]: c for c in state.last_checks}
    assert {n: checks[n]["result"] for n in ("label_coverage", "auc_drop", "fairness_gap")} == {
        "label_coverage": "pass", "auc_drop": "pass", "fairness_gap": "pass"}  # fmt: skip
    advances = [e for e in store.history("credit", limit=100) if e["action"] == "rollout.advance"]
    assert len(advances) == 2  # out of the shadow, then to 100%
