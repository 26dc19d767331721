"""One simulated gateway: the Redis traffic a gateway's background threads make, through the
same registry_client calls (and, for the quality and rollout tasks, the gateway's own
classes), with none of its serving.

What each task does, as the gateway does it (gateway/routing/watcher.py, heartbeat.py,
hints.py, gateway/telemetry/background.py, gateway/quality/, gateway/rollout/controller.py,
gateway/drift/monitor.py): the epoch poll, with every rule read every FULL_READ_POLLS polls;
the heartbeat; the statistics and sketch flushes of the current windows (and, once a minute,
the closed minute and its hour); the prediction log; the label joiner's and the rollout
controller's lease (every replica tries, one holds each); the quality configs and gauges; the
drift monitor's reads. Its hint subscription is followed by hints.py, which calls resync()
on each hint, as a hint wakes the rule follower.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import numpy as np

from benchmarks.fleet.payloads import FILLS, Payloads, heartbeat_fields, prediction_records
from benchmarks.fleet.plan import VERSIONS, Cadence, Workload, model_names
from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.metrics.rollout import RolloutMetrics
from gateway.quality.configs import QualityConfigs
from gateway.quality.gauges import QualityGauges
from gateway.quality.joining import LabelJoining
from gateway.rollout.controller import RolloutController
from gateway.routing.heartbeat import heartbeat_ttl_seconds
from gateway.routing.watcher import FULL_READ_POLLS
from registry_client.client import RegistryClient
from registry_client.drift.store import HOUR, MINUTE, SketchWrite
from registry_client.errors import NotFound
from registry_client.stats.store import WindowWrite
from registry_client.stats.window import WINDOW_SECONDS, window_of

__all__ = ["SimulatedGateway"]

# What a beat reads of the hash it replaces, as gateway/routing/heartbeat.py asks for it.
WRITER_FIELDS = ("instance", "interval", "host", "pid")
FLUSH_SECONDS = 10  # the fills of Payloads are 10 s of traffic apart


class SimulatedGateway:
    """One replica's registry client and background tasks; tasks() lists them for the
    scheduler."""

    def __init__(
        self, name: str, url: str, workload: Workload, cadence: Cadence, payloads: Payloads,
        metrics: tuple[GatewayMetrics, RolloutMetrics], seed: int,
    ) -> None:  # fmt: skip
        self.name = name
        self.client = RegistryClient.from_url(url)
        self._workload = workload
        self._cadence = cadence
        self._payloads = payloads
        self._models = model_names(workload.models)
        self._instance = uuid.uuid4().hex
        self._rng = np.random.default_rng(seed)
        gateway_metrics, rollout_metrics = metrics
        self._configs = QualityConfigs(self.client, None)
        self._gauges = QualityGauges(lambda: self._models, self._configs.current, self.client,
                                     gateway_metrics, cadence.quality_gauges_window)  # fmt: skip
        self._joining = LabelJoining(self.client, name, gateway_metrics, self._configs.current,
                                     cadence.label_lease, cadence.prediction_settle)  # fmt: skip
        self._controller = RolloutController(self.client, name, rollout_metrics,
                                             tick_seconds=cadence.rollout_tick,
                                             lease_seconds=cadence.rollout_lease)  # fmt: skip
        self._polls = 0
        self._polled_epoch = -1
        self._stats_window: int | None = None  # the minute the last flush wrote
        self._sketch_window: int | None = None
        self._stats_confirm: int | None = None  # a closed window to write once more
        self._minute_confirm: int | None = None
        self._hour_confirm: int | None = None
        self._logged_at: float | None = None
        self._owed = 0.0  # predictions due but not yet a whole one
        self.polled: list[tuple[float, int]] = []  # (monotonic, epoch) a scheduled poll first saw
        self.hints: list[float] = []  # monotonic time of each hint's arrival
        self.resyncs: list[float] = []  # monotonic time each hint's full read ended
        self.predictions = 0

    def tasks(self) -> list[tuple[str, Callable[[], object]]]:
        """(kind, work) of every periodic task; Cadence.periods() has each kind's period."""
        return [
            ("epoch-poll", self.poll), ("heartbeat", self.beat),
            ("statistics", self.flush_statistics), ("sketches", self.flush_sketches),
            ("prediction-log", self.log_predictions), ("label-join", self._joining.tick),
            ("rollout-controller", self._controller.tick),
            ("quality-configs", self._configs.refresh), ("quality-gauges", self._gauges.refresh),
            ("drift-monitor", self.refresh_drift),
        ]  # fmt: skip

    def start_configs(self) -> None:
        """The quality configs' first read, made before the gateway's other tasks start."""
        self._configs.refresh()

    def poll(self) -> None:
        epoch = self.client.epoch()
        if epoch > self._polled_epoch:
            self.polled.append((time.monotonic(), epoch))
            self._polled_epoch = epoch
        self._polls += 1
        if self._polls % FULL_READ_POLLS == 0:
            self.client.rules()

    def beat(self) -> None:
        period = self._cadence.heartbeat
        fields = heartbeat_fields(self._workload, self._instance, period, revision=1)
        self.client.heartbeat(self.name, fields, heartbeat_ttl_seconds(period),
                              previous=WRITER_FIELDS)  # fmt: skip

    def flush_statistics(self) -> None:
        """The current minute's window; once a minute the closed one, its last time, and a
        flush later once more (gateway/telemetry/window_ledger.py confirms closed windows)."""
        window, fill = _window_and_fill(time.time())
        closed = [] if self._stats_confirm is None else [self._stats_confirm]
        self._stats_confirm = None
        if self._stats_window is not None and self._stats_window != window:
            closed.append(self._stats_window)
            self._stats_confirm = self._stats_window
        self._stats_window = window
        stats = self._payloads.stats
        writes = [WindowWrite(m, window, stats[m][fill]) for m in self._models]
        writes += [WindowWrite(m, w, stats[m][-1]) for w in closed for m in self._models]
        self.client.stats.write(self.name, writes, self._cadence.stats_retention)

    def flush_sketches(self) -> None:
        """As flush_statistics, per version; a closed minute is also rolled into its hour,
        whose window is written then (and confirmed once the hour has closed)."""
        window, fill = _window_and_fill(time.time())
        minutes = [] if self._minute_confirm is None else [self._minute_confirm]
        hours = [] if self._hour_confirm is None else [self._hour_confirm]
        self._minute_confirm = self._hour_confirm = None
        closed = self._sketch_window
        if closed is not None and closed != window:
            hour = closed * WINDOW_SECONDS // 3600
            minutes.append(closed)
            hours.append(hour)
            self._minute_confirm = closed
            if window * WINDOW_SECONDS // 3600 != hour:
                self._hour_confirm = hour
        self._sketch_window = window
        sketches, pairs = self._payloads.sketches, self._version_pairs()
        writes = [SketchWrite(m, v, MINUTE, window, sketches[m, v][fill]) for m, v in pairs]
        writes += [SketchWrite(m, v, MINUTE, w, sketches[m, v][-1]) for w in minutes
                   for m, v in pairs]  # fmt: skip
        writes += [SketchWrite(m, v, HOUR, h, self._payloads.hours[m, v]) for h in hours
                   for m, v in pairs]  # fmt: skip
        cadence = self._cadence
        self.client.drift.write(self.name, writes, cadence.drift_minute_ttl,
                                cadence.drift_hour_ttl)  # fmt: skip

    def log_predictions(self) -> None:
        """Write the predictions made since the last write, spread over the models."""
        now = time.time()
        if self._logged_at is None:
            self._logged_at = now - self._cadence.prediction_flush
        self._owed += self._workload.requests_per_second * (now - self._logged_at)
        self._logged_at = now
        due = int(self._owed)
        self._owed -= due
        per_model = self._rng.multinomial(due, [1 / len(self._models)] * len(self._models))
        for index, count in enumerate(per_model):
            if count:
                entries = prediction_records(self._workload, index, int(count), now, self._rng)
                self.client.predictions.write(self._models[index], entries,
                                              self._cadence.prediction_ttl)  # fmt: skip
                self.predictions += int(count)

    def refresh_drift(self) -> None:
        """The drift monitor's refresh: each version's entry and reference, and with a
        reference, every replica's sketches over the monitor's window."""
        cadence = self._cadence
        for model, version in self._version_pairs():
            self.client.show_version(model, version)
            try:
                self.client.drift.get_reference(model, version)
            except NotFound:
                continue
            self.client.drift.read(model, version, cadence.drift_monitor_window,
                                   minute_ttl=cadence.drift_minute_ttl)  # fmt: skip

    def resync(self) -> None:
        """What a hint makes the rule follower do: read the epoch, then every rule."""
        self.client.epoch()
        self.client.rules()
        self.resyncs.append(time.monotonic())

    def close(self) -> None:
        self.client.close()

    def _version_pairs(self) -> list[tuple[str, str]]:
        return [(m, v) for m in self._models for v in VERSIONS]


def _window_and_fill(now: float) -> tuple[int, int]:
    """The 1-minute window `now` falls in, and the payload fill a flush then writes."""
    window = window_of(now)
    into = now - window * WINDOW_SECONDS
    return window, min(FILLS - 1, int(into // FLUSH_SECONDS))
