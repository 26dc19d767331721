"""Metrics measured on a version over time (`{ns}:measurements:{model}:{version}`, a list of
JSON documents, oldest first): each one timestamped, attributed to its source and audited,
the artifact and the metrics it was registered with untouched."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from registry_client.connection import Pipeline
from registry_client.errors import NotFound, Rejected
from registry_client.records.base import RegistryBase
from registry_client.records.values import as_text, checked_name, timestamp
from registry_client.schema import text_problem, validate_name

__all__ = ["MAX_MEASUREMENTS", "REGISTRATION_SOURCE", "Measurement", "MeasurementRecords"]

MAX_MEASUREMENTS = 1000  # per version: the oldest go first
REGISTRATION_SOURCE = "registration"  # the source of the metrics given with the version
_MAX_METRICS = 64
_MAX_SOURCE_CHARS = 200

Measurement = dict[str, Any]  # at, by, source, values


class MeasurementRecords(RegistryBase):
    """Appending and reading versions' measured metrics."""

    def add_metrics(
        self, model: str, version: str, values: Mapping[str, float], *, source: str,
        actor: str, dry_run: bool = False,
    ) -> Measurement:  # fmt: skip
        """Append a measurement (audited); returns it. Rejected naming the metric or the
        source when one is not valid; NotFound for a version that is not registered. With
        `dry_run`, every check is made and the measurement returned, but not appended."""
        key = self.keys.version(checked_name(model, "model"), checked_name(version, "version"))
        measurement = {"at": timestamp(), "by": actor, "source": _source(source),
                       "values": checked_metrics(values, "metrics")}  # fmt: skip
        document = json.dumps(measurement, sort_keys=True)
        history = self.keys.measurements(model, version)

        def write(pipe: Pipeline) -> None:
            if not pipe.hget(key, "status"):
                raise NotFound(f"version {version!r} of model {model!r} is not registered")
            if dry_run:  # no MULTI: the transaction ends with the check
                return
            pipe.multi()
            pipe.rpush(history, document)
            pipe.ltrim(history, -MAX_MEASUREMENTS, -1)
            self._audit(pipe, actor, "version.metrics", model, None,
                        {"version": version, **measurement}, "")  # fmt: skip

        self._transaction([key], write, retry=True)
        return measurement

    def metrics_history(self, model: str, version: str) -> list[Measurement]:
        """Every measurement of the version, oldest first: the metrics it was registered
        with (source `registration`), then those added. NotFound for an unknown version."""
        key = self.keys.version(checked_name(model, "model"), checked_name(version, "version"))
        with self._connection(), self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(key, ["metrics", "created_by", "created_at"])
            pipe.lrange(self.keys.measurements(model, version), 0, -1)
            (registered, by, at), added = pipe.execute()
        if by is None:
            raise NotFound(f"version {version!r} of model {model!r} is not registered")
        history: list[Measurement] = []
        values = json.loads(as_text(registered) or "{}")
        if values:
            history.append({"at": as_text(at), "by": as_text(by), "source": REGISTRATION_SOURCE,
                            "values": values})  # fmt: skip
        history.extend(json.loads(as_text(raw)) for raw in added)
        return history

    def latest_metrics(self, model: str, version: str) -> dict[str, dict[str, Any]]:
        """Each metric's latest measurement: name -> {value, source, at}."""
        latest: dict[str, dict[str, Any]] = {}
        for measurement in self.metrics_history(model, version):
            for name, value in measurement["values"].items():
                latest[name] = {"value": value, "source": measurement["source"],
                                "at": measurement["at"]}  # fmt: skip
        return latest


def checked_metrics(values: Mapping[str, object], what: str) -> dict[str, float]:
    """Metric names and finite numbers, or Rejected naming the first that is not."""
    if not values:
        raise Rejected(f"{what}: expected at least one NAME=NUMBER")
    if len(values) > _MAX_METRICS:
        raise Rejected(f"{what}: expected at most {_MAX_METRICS} metrics, got {len(values)}")
    checked = {}
    for name, value in values.items():
        try:
            validate_name(name, f"{what}: metric name")
        except ValueError as exc:
            raise Rejected(str(exc)) from exc
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ):  # fmt: skip
            raise Rejected(f"{what}.{name}: expected a finite number, got {value!r}")
        checked[name] = float(value)
    return checked


def _source(source: str) -> str:
    problem = "expected at least 1 character" if not source else (
        text_problem(source, _MAX_SOURCE_CHARS))  # fmt: skip
    if problem is not None:
        raise Rejected(f"source: {problem}")
    return source
