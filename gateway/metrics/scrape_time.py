"""Gauges whose values are read from their source, not set by the code they describe.

In one process a gauge is read when scraped, so requests pay nothing. Multiprocess files
(--workers) cannot be read at scrape time: there a plain gauge is exported instead, and a
sampler the composition root runs periodically copies the values into it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["ScrapeTimeGauge", "sampler", "unlabelled"]


class ScrapeTimeGauge(Collector):
    """A gauge whose values are read from a source when scraped, so requests pay nothing."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        source: Callable[[], Mapping[tuple[str, ...], float]],
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = list(labels)
        self._source = source

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(self._name, self._documentation, labels=self._labels)
        for label_values, value in sorted(self._source().items()):
            gauge.add_metric(list(label_values), value)
        yield gauge


def sampler(gauge: Gauge, source: Callable[[], int]) -> Callable[[], None]:
    """What copies an unlabelled `source` into `gauge` each time it runs."""
    return lambda: gauge.set(source())


def unlabelled(source: Callable[[], int]) -> Callable[[], Mapping[tuple[str, ...], float]]:
    """`source` as the one series of a ScrapeTimeGauge without labels."""
    return lambda: {(): source()}
