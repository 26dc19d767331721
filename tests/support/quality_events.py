"""A registry for quality-event tests: a binary model with a primary and a shadow, windows of
predictions labelled and joined as production joins them, drift sketches, real rollout
controllers on a clock the test moves, and a real HTTP receiver behind the signed webhook."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from gateway.metrics.rollout import RolloutMetrics
from gateway.rollout.controller import RolloutController
from gateway.rollout.quality_events import QualityEventLimits, QualityEvents
from gateway.rollout.webhook import WebhookNotifier
from registry_client.client import RegistryClient
from registry_client.drift.reference import FeatureReference
from registry_client.drift.sketch import FeatureSketch, encode_sketches
from registry_client.drift.store import MINUTE, SketchWrite
from registry_client.quality.evaluation import Evaluation
from registry_client.quality.task import QualityConfig
from registry_client.records.rule_documents import Shadow, Split
from registry_client.stats.window import window_of
from tests.gateway.test_rollout_webhook import SECRET, Receiver, receiver_accepts
from tests.support import onnx_models
from tests.support.joined_labels import Row, log_and_label

MODEL = "credit"
W = 600.0  # the judged windows
# Hour-aligned (so windows are minute-aligned), recent enough for every key's expiry.
T0 = (int(time.time()) // 3600 - 12) * 3600
CONFIG = QualityConfig("binary", "probabilities", 1, segments=("gender",),
                       label_deadline_seconds=86400.0)  # fmt: skip
LIMITS = QualityEventLimits(window_seconds=W, windows=2, min_labels=40.0, accuracy_drop=0.05,
                            fairness_gap=0.2, margin=0.01)  # fmt: skip
PER_WINDOW = 80
PRIMARY, SHADOW = ("1", "primary"), ("2", "shadow")
FEATURE = "input[0]"

# Scores of prediction i, labelled i % 2, gender M for i % 8 < 4: each gender has both
# labels and both scores equally often unless the scheme says otherwise.
Scores = Callable[[int], float]


def good(i: int) -> float:
    """AUC 1; selection rates equal across genders."""
    return 0.9 if i % 2 else 0.1


def bad(i: int) -> float:
    """AUC 0.5; selection rates equal across genders."""
    return 0.9 if i % 4 < 2 else 0.1


def unfair(i: int) -> float:
    """M always selected, F never (demographic-parity difference 1, worst F); AUC 0.5."""
    return 0.9 if i % 8 < 4 else 0.1


def window_end(k: int) -> float:
    return T0 + (k + 1) * W


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


class World:
    """The registry, the receiver, and the notifiers and controllers a test makes."""

    def __init__(self, redis_url: str, tmp_path: Path) -> None:
        self.url = redis_url
        self.client = RegistryClient.from_url(redis_url)
        self.client.create_model(MODEL, actor="ops", quality=CONFIG)
        for version in ("1", "2"):
            path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, MODEL, version)
            self.client.register_version(MODEL, version, path, actor="ops")
        self.client.set_route(MODEL, [Split("1", 100)], [Shadow("2", 100.0)], actor="ops")
        self.receiver = Receiver()
        self.clock = Clock()
        self._notifiers: list[WebhookNotifier] = []
        self._controllers: list[RolloutController] = []
        self._rng = np.random.default_rng(7)

    def controller(
        self, name: str, limits: QualityEventLimits = LIMITS, client: RegistryClient | None = None
    ) -> RolloutController:
        """A rollout controller judging quality events, with a webhook notifier of its own;
        through `client` (another Redis user) when given."""
        client = client or self.client
        notifier = WebhookNotifier(self.receiver.url, SECRET, timeout_seconds=2.0,
                                   backoff_seconds=0.01)  # fmt: skip
        notifier.start()
        self._notifiers.append(notifier)
        events = QualityEvents(client, name, limits, notifier.notify)
        controller = RolloutController(
            client, name, RolloutMetrics(CollectorRegistry()), tick_seconds=0.05,
            lease_seconds=10.0, notify=notifier.notify, clock=self.clock,
            quality_events=events,
        )  # fmt: skip
        self._controllers.append(controller)
        return controller

    def evaluate(self, version: str, auc: float) -> None:
        evaluation = Evaluation(time=T0, data_sha256="0" * 64, labels_sha256="0" * 64,
                                segments_sha256=None, rows=1000, task="binary",
                                metrics={"auc_roc": auc})  # fmt: skip
        self.client.record_evaluation(MODEL, version, evaluation, actor="ops")

    def predict(self, k: int, scores: dict[tuple[str, str], Scores]) -> None:
        """Window k's predictions by each (version, role), all labelled and joined."""
        rows = [
            Row(f"w{k}-{i}", int(T0 + k * W + 5 + i * (W - 10) / PER_WINDOW),
                ("M" if i % 8 < 4 else "F",), {key: s(i) for key, s in scores.items()},
                float(i % 2))
            for i in range(PER_WINDOW)
        ]  # fmt: skip
        log_and_label(self.client, MODEL, CONFIG, rows, window_end(k))

    def reference(self, version: str) -> None:
        values = self._rng.normal(0.0, 1.0, 5000)
        reference = FeatureReference.from_values(values)
        assert reference is not None
        self.client.drift.set_reference(MODEL, version, {FEATURE: reference}, {"source": "test"},
                                        actor="ops")  # fmt: skip

    def sketch(self, k: int, version: str, shift: float) -> None:
        """2,000 inputs in window k's first minute, one standard deviation apart per `shift`."""
        bins = self.client.drift.get_reference(MODEL, version)[FEATURE].bins
        sketch = FeatureSketch()
        sketch.update(self._rng.normal(shift, 1.0, 2000), bins)
        payload = encode_sketches(2000, {FEATURE: sketch})
        write = SketchWrite(MODEL, version, MINUTE, window_of(T0 + k * W), payload)
        self.client.drift.write("gw-x", [write], 3600, 86400)

    def judge(self, k: int, *controllers: RolloutController) -> None:
        """Every controller ticks three times during window k + 1 (which judges window k)."""
        for offset in (1.0, W / 3, 2 * W / 3):
            self.clock.now = window_end(k) + offset
            for controller in controllers:
                controller.tick()

    def received(self) -> list[dict[str, Any]]:
        """Every event delivered so far, checked as a receiver checks it, once every notifier
        has delivered what it queued."""
        for notifier in self._notifiers:
            notifier.stop(timeout_seconds=5.0)
        found = []
        for request in self.receiver.requests:
            assert receiver_accepts(SECRET, request.headers, request.body)
            body = json.loads(request.body)
            assert request.headers["X-Onnxgate-Event"] == body["event"]
            found.append(body)
        return found

    def close(self) -> None:
        for controller in self._controllers:
            controller.stop()
        for notifier in self._notifiers:
            notifier.stop(timeout_seconds=1.0)
        self.receiver.close()
        self.client.close()
