"""The gRPC server's own gauges: calls in flight, call threads, connections, and calls whose
request message never came."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.metrics.scrape_time import ScrapeTimeGauge, sampler, unlabelled

__all__ = ["TransportMetrics"]


class TransportMetrics:
    """What the server holds now, read from its source at scrape time (or sampled, with
    workers), and the receive timeouts it counts."""

    registry: CollectorRegistry
    multiprocess: bool
    samplers: list[Callable[[], None]]

    def __init__(self, registry: CollectorRegistry) -> None:
        self.receive_timeouts = Counter(
            "onnxgate_grpc_receive_timeouts",
            "Calls cancelled because their request message did not arrive within the receive"
            " timeout (headers without a body).",
            registry=registry,
        )

    def watch_inflight(self, inflight_by_model: Callable[[], Mapping[str, int]]) -> None:
        """Export onnxgate_inflight_requests{model}, read from the source at scrape time (in
        multiprocess mode: sampled, and summed over the workers)."""

        def by_label() -> dict[tuple[str, ...], float]:
            return {(model,): count for model, count in inflight_by_model().items()}

        if self.multiprocess:
            sampled = Gauge(
                "onnxgate_inflight_requests", "Inference requests being served now (sampled).",
                ["model"], registry=self.registry, multiprocess_mode="livesum",
            )  # fmt: skip

            def sample() -> None:
                for (model,), count in by_label().items():
                    sampled.labels(model).set(count)

            self.samplers.append(sample)
            return
        gauge = ScrapeTimeGauge(
            "onnxgate_inflight_requests",
            "Inference requests being served now.",
            ["model"],
            by_label,
        )
        self.registry.register(gauge)

    def watch_transport(
        self, call_threads: Callable[[], int], connections: Callable[[], int]
    ) -> None:
        """Export onnxgate_grpc_call_threads and onnxgate_grpc_connections, read at scrape
        time (in multiprocess mode: sampled; threads summed, connections shared by the port)."""
        gauges: tuple[tuple[str, str, Callable[[], int], Literal["livesum", "livemax"]], ...] = (
            ("onnxgate_grpc_call_threads", "Threads of the gRPC server's calls, busy or idle.",
             call_threads, "livesum"),
            ("onnxgate_grpc_connections", "Client connections open to the gRPC port.",
             connections, "livemax"),
        )  # fmt: skip
        for name, documentation, source, mode in gauges:
            if self.multiprocess:
                sampled = Gauge(name, documentation + " (sampled)", registry=self.registry,
                                multiprocess_mode=mode)  # fmt: skip
                self.samplers.append(sampler(sampled, source))
            else:
                self.registry.register(ScrapeTimeGauge(name, documentation, [], unlabelled(source)))
