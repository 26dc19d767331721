"""Joined quality state made the way production makes it: predictions written to the prediction
log, labels put by id, then the label joiner run until the stream is drained."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from registry_client.client import RegistryClient
from registry_client.quality.join import LabelJoiner
from registry_client.quality.labels import Label
from registry_client.quality.predictions import PredictionRecord
from registry_client.quality.task import QualityConfig

__all__ = ["Row", "join_all", "log_and_label"]


@dataclass(frozen=True, slots=True)
class Row:
    """One prediction: its id and time, its segment values (in the model's order), the score
    of each (version, role) that made it (the primary first), and its label (None: none)."""

    request_id: str
    time: int
    segments: tuple[str, ...]
    scores: dict[tuple[str, str], float] = field(default_factory=dict)
    label: float | None = None


def join_all(client: RegistryClient, model: str, config: QualityConfig, now: float) -> None:
    """Run one joiner until every label put so far is joined."""
    joiner = LabelJoiner(client._redis, client.keys, "gw-1")
    while joiner.join(model, config, None, None, now).remaining:
        pass


def log_and_label(
    client: RegistryClient, model: str, config: QualityConfig, rows: Sequence[Row], now: float
) -> None:
    """Log every row's predictions, put the labels of those that have one, join them."""
    ttl = int(config.label_deadline_seconds) + 86400
    entries = [
        (row.request_id, [PredictionRecord(version, role, row.time, row.segments, score)
                          for (version, role), score in row.scores.items()])
        for row in rows
    ]  # fmt: skip
    client.predictions.write(model, entries, ttl)
    labels = [Label(row.request_id, row.label) for row in rows if row.label is not None]
    client.put_labels(model, labels, now)
    join_all(client, model, config, now)
