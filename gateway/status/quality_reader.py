"""Live quality for the model page: a day of joined labels per version and role, and per
value of each segment the model is reported by (gatectl accuracy's reports).

A day of quality minutes is thousands of Redis reads and labels arrive late and slowly, so a
model's quality is read again only once a minute, not at every refresh of its page."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.status.snapshot import QualityView
from registry_client.cli.quality import accuracy_report
from registry_client.client import RegistryClient

__all__ = ["QUALITY_REFRESH_SECONDS", "QUALITY_SECONDS", "QualityReader"]

QUALITY_SECONDS = 86400.0
QUALITY_REFRESH_SECONDS = 60.0


class QualityReader:
    def __init__(self, client: RegistryClient, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._clock = clock
        self._read: dict[str, QualityView | None] = {}

    def read(self, model: str) -> QualityView | None:
        """The model's quality (None without a quality config), read again when a minute old
        or when its config changed."""
        config = self._client.model_quality(model)
        now = self._clock()
        known = self._read.get(model)
        if config is None:
            self._read.pop(model, None)
            return None
        if known is not None and known.config == config.to_json():
            if now - known.read_at < QUALITY_REFRESH_SECONDS:
                return known
        # A report per segment carries the overall rows too; without segments, one report.
        reports = {name: accuracy_report(self._client, model, QUALITY_SECONDS, segment=name)
                   for name in config.segments}  # fmt: skip
        overall = next(iter(reports.values()), None) or accuracy_report(
            self._client, model, QUALITY_SECONDS
        )
        view = QualityView(config.task, overall, reports, now, config.to_json())
        self._read[model] = view
        return view
