"""How a gateway reads the registry's epoch over time: gone after it was seen, and back to a
lower value (a wipe, or an older copy of the registry in its place). No Redis is reached: the
client connects lazily, and reading epochs needs none."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.routing.registry_loss import RegistryLosses
from registry_client.client import RegistryClient


def _read(epochs: list[int]) -> tuple[list[bool], GatewayMetrics]:
    """note_epoch over `epochs` in turn: whether each went back, and the metrics after."""
    metrics = GatewayMetrics(CollectorRegistry())
    client = RegistryClient.from_url("redis://127.0.0.1:1/0")
    try:
        losses = RegistryLosses(client, metrics)
        return [losses.note_epoch(epoch) for epoch in epochs], metrics
    finally:
        client.close()


def _value(metrics: GatewayMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def test_every_read_lower_than_the_one_before_is_counted() -> None:
    went_back, metrics = _read([0, 5, 5, 7, 3, 0, 4, 2, 2, 6])
    assert went_back == [False, False, False, False, True, True, False, True, False, False]
    assert _value(metrics, "onnxgate_registry_epoch_rewinds_total") == 3


def test_a_registry_empty_from_the_start_is_not_missing_and_never_went_back() -> None:
    went_back, metrics = _read([0, 0, 0])
    assert went_back == [False, False, False]
    assert _value(metrics, "onnxgate_registry_epoch_rewinds_total") == 0
    assert _value(metrics, "onnxgate_registry_epoch_missing") == 0


def test_the_epoch_is_missing_from_the_wipe_until_it_is_written_again() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    client = RegistryClient.from_url("redis://127.0.0.1:1/0")
    losses = RegistryLosses(client, metrics)
    missing = []
    for epoch in (4, 0, 0, 1, 0):
        losses.note_epoch(epoch)
        missing.append(_value(metrics, "onnxgate_registry_epoch_missing"))
    client.close()
    assert missing == [0, 1, 1, 0, 1]


def test_an_older_copy_is_warned_about_once_and_a_wipe_only_as_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.routing.registry_loss")
    _read([9, 4, 4, 4, 0, 0, 3])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in warnings] == [
        "registry epoch went back",
        "registry epoch gone",
    ]
    assert (vars(warnings[0])["previous_epoch"], vars(warnings[0])["epoch"]) == (9, 4)
