"""QualityGauges over labels really joined in a real Redis, read from a real CollectorRegistry:
the figures equal the report's, only the task's own are exported, series no longer read are
retired, and a Redis outage leaves the last figures (logged once)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.quality.configs import QualityConfigs
from gateway.quality.gauges import BINARY_GAPS, QualityGauges
from registry_client.client import RegistryClient
from registry_client.quality.report import read_range
from registry_client.quality.task import QualityConfig
from registry_client.schema import Keys
from tests.support.joined_labels import Row, log_and_label

NOW = time.time()
BASE = int(NOW) - 3600
WINDOW = 6 * 3600.0
BINARY = QualityConfig("binary", "probabilities", 1, segments=("gender", "region"),
                       label_deadline_seconds=86400.0)  # fmt: skip
BINARY_METRICS = ("auc_roc", "pr_auc", "accuracy", "precision", "recall", "f1", "brier",
                  "log_loss", "ece")  # fmt: skip


class Env:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = RegistryClient.from_url(url)
        self.registry = CollectorRegistry()
        self.served = ["credit"]
        self.now = NOW
        metrics = GatewayMetrics(self.registry)
        self.configs = QualityConfigs(self.client, None)
        self.gauges = QualityGauges(lambda: list(self.served), self.configs.current,
                                    self.client, metrics, WINDOW, lambda: self.now)  # fmt: skip

    def refresh(self) -> None:
        """As the gateway's threads do: the configs followed, then the gauges."""
        self.configs.refresh()
        self.gauges.refresh()

    def quality(self, version: str, role: str, metric: str, model: str = "credit") -> (
        float | None
    ):  # fmt: skip
        return self.registry.get_sample_value("onnxgate_quality", {
            "model": model, "version": version, "role": role, "metric": metric})  # fmt: skip

    def gap(self, version: str, segment: str, metric: str, model: str = "credit") -> (
        float | None
    ):  # fmt: skip
        return self.registry.get_sample_value("onnxgate_fairness_gap", {
            "model": model, "version": version, "segment": segment, "metric": metric})  # fmt: skip

    def series(self) -> int:
        return sum(len(family.samples) for family in self.registry.collect()
                   if family.name in ("onnxgate_quality", "onnxgate_fairness_gap"))  # fmt: skip


def _rows(count: int, unlabelled: int, seed: int) -> list[Row]:
    """Version 1 as primary, 2 as its shadow; segments gender and region."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count + unlabelled):
        label = int(rng.integers(0, 2))
        score = float(f"{min(max(0.35 * label + 0.65 * rng.random(), 0.0), 1.0):.4f}")
        rows.append(Row(f"r{i}", BASE + i, (str(rng.choice(["F", "M"])), "north"),
                        {("1", "primary"): score, ("2", "shadow"): round(1 - score, 4)},
                        float(label) if i < count else None))  # fmt: skip
    return rows


@pytest.fixture
def env(redis_server) -> Iterator[Env]:
    found = Env(redis_server.url)
    found.client.create_model("credit", actor="ops", quality=BINARY)
    log_and_label(found.client, "credit", BINARY, _rows(300, 100, 1), NOW)
    yield found
    found.client.close()


def test_binary_figures_equal_the_report_and_only_the_tasks_own_are_exported(env):
    env.refresh()
    found = read_range(env.client.quality, env.client.predictions, "credit",
                       (int(NOW) - int(WINDOW)) // 60, int(NOW) // 60)  # fmt: skip
    for version, role in (("1", "primary"), ("2", "shadow")):
        quality = found.quality(version, role)
        for name in BINARY_METRICS:
            assert env.quality(version, role, name) == quality.metrics[name], name
        assert env.quality(version, role, "labelled_rows") == 300
        assert env.quality(version, role, "label_coverage") == 0.75
        assert env.quality(version, role, "label_delay_p50_seconds") == quality.delays["p50"]
        for name in ("macro_f1", "mae", "rmse", "bias"):
            assert env.quality(version, role, name) is None, name


def test_fairness_gaps_per_dimension_equal_the_report(env):
    env.refresh()
    found = read_range(env.client.quality, env.client.predictions, "credit",
                       (int(NOW) - int(WINDOW)) // 60, int(NOW) // 60)  # fmt: skip
    for version, role in (("1", "primary"), ("2", "shadow")):  # 2 has rows as a shadow only
        report = found.fairness(version, role, "gender")
        assert report is not None
        for name in BINARY_GAPS:
            assert env.gap(version, "gender", name) == getattr(report, name), name
        # one value only (north): no difference is defined, so no series
        assert all(env.gap(version, "region", name) is None for name in BINARY_GAPS)


@pytest.mark.parametrize(
    ("task", "score", "label", "metrics", "gap"),
    [
        ("multiclass", (2.0, 1.0), (2.0, 2.0), {"accuracy": 0.5, "macro_f1": 1 / 3},
         ("accuracy_difference", 1.0)),
        ("regression", (2.0, 5.0), (1.0, 1.0), {"mae": 2.5, "bias": 2.5}, ("mae_difference", 3.0)),
    ],
)  # fmt: skip
def test_other_tasks_export_their_metrics_and_one_gap(env, task, score, label, metrics, gap):
    config = QualityConfig(task, "out", None, segments=("gender",), label_deadline_seconds=86400.0)
    env.client.create_model("other", actor="ops", quality=config)
    rows = [Row(f"o{i}", BASE, (gender,), {("1", "primary"): score[i]}, label[i])
            for i, gender in enumerate(("F", "M"))]  # fmt: skip
    log_and_label(env.client, "other", config, rows, NOW)
    env.served = ["other"]
    env.refresh()
    for name, value in metrics.items():
        assert env.quality("1", "primary", name, "other") == pytest.approx(value), name
    assert env.quality("1", "primary", "auc_roc", "other") is None
    assert env.gap("1", "gender", gap[0], "other") == gap[1]


def test_a_model_no_longer_served_has_its_series_retired(env):
    env.refresh()
    assert env.series() > 0
    env.served = []
    env.refresh()
    assert env.series() == 0


def test_versions_out_of_the_window_have_their_series_retired(env):
    env.refresh()
    assert env.quality("1", "primary", "auc_roc") is not None
    env.now = NOW + WINDOW + 3600  # the predictions are now older than the window
    env.refresh()
    assert env.series() == 0


def test_a_model_without_a_quality_config_exports_nothing(env):
    env.client.create_model("plain", actor="ops")
    env.served = ["plain"]
    env.refresh()
    assert env.series() == 0


def test_an_unreadable_config_retires_the_models_series_and_is_logged_once(env, caplog):
    env.refresh()
    assert env.series() > 0
    raw = redis.Redis.from_url(env.url)
    try:
        raw.hset(Keys().model("credit"), "quality", '{"task": "ranking"}')  # written by hand
    finally:
        raw.close()
    with caplog.at_level(logging.WARNING, logger="gateway.quality.configs"):
        env.refresh()
        env.refresh()
    assert env.series() == 0
    assert [r.getMessage() for r in caplog.records] == [
        "quality config unreadable; predictions not logged"
    ]


def test_redis_unreachable_leaves_the_last_figures_and_is_logged_once(env, redis_server,
                                                                      caplog):  # fmt: skip
    env.refresh()
    before = env.quality("1", "primary", "auc_roc")
    series = env.series()
    redis_server.stop()
    with caplog.at_level(logging.INFO, logger="gateway.quality.gauges"):
        env.refresh()
        env.refresh()
        assert (env.quality("1", "primary", "auc_roc"), env.series()) == (before, series)
        redis_server.start()  # empty: the model's config is gone with it
        env.refresh()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["quality gauges not refreshed; the last figures stay",
                        "quality gauges refreshed again"]  # fmt: skip
    assert env.series() == 0
