"""Expositions and status pages rendered on a small fixed pool of threads, never on the event
loop.

Scrapes asking for the same exposition (or views of the same page) while one is still queued
share it, so a flood of requests queues at most one rendering per distinct exposition or page
ahead of a real scrape.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gateway.metrics.http.messages import Exposition, Page, Response

__all__ = ["Pages", "Renderer", "render"]

Delivery = Callable[["Future[Response]"], None]
Rendering = Exposition | Page


class Pages(Protocol):
    """Status pages the server serves besides the exposition, and stops with itself."""

    def respond(self, path: str) -> Response: ...

    def stop(self) -> None: ...


def render(registry: CollectorRegistry, exposition: Exposition) -> Response:
    """The 200 response for `exposition`, negotiated as make_wsgi_app does."""
    encoder, content_type = choose_encoder(exposition.accept)
    names = exposition.names
    source = registry if names is None else registry.restricted_registry(names)
    body = encoder(source)
    headers = [("Content-Type", content_type)]
    if exposition.gzip:
        body = gzip.compress(body)
        headers.append(("Content-Encoding", "gzip"))
    return Response("200 OK", tuple(headers), body)


class Renderer:
    """Owns the render threads. submit() is called from one thread (the event loop);
    deliveries run on a pool thread and must hand the result back themselves."""

    def __init__(
        self, registry: CollectorRegistry, threads: int, pages: Pages | None = None
    ) -> None:
        self._registry = registry
        self.pages = pages
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="onnxgate-metrics-render")
        self._lock = threading.Lock()  # guards _queued between the loop and the pool
        self._queued: dict[Rendering, list[Delivery]] = {}

    def submit(self, exposition: Rendering, deliver: Delivery) -> None:
        """Render `exposition` (or join a queued rendering of it) and pass the finished future
        to `deliver`; its result is the response, its exception what the registry raised."""
        with self._lock:
            waiting = self._queued.get(exposition)
            if waiting is not None:
                waiting.append(deliver)
                return
            waiting = self._queued[exposition] = [deliver]
        future = self._executor.submit(self._render, exposition)

        def deliver_all(done: Future[Response]) -> None:
            for each in waiting:  # complete: _render took it out of _queued before running
                each(done)

        future.add_done_callback(deliver_all)

    def _render(self, exposition: Rendering) -> Response:
        with self._lock:  # from here on a new request waits for a fresher rendering
            del self._queued[exposition]
        if isinstance(exposition, Page):
            assert self.pages is not None  # answer() asks for pages only when there are some
            return self.pages.respond(exposition.path)
        return render(self._registry, exposition)

    def close(self) -> None:
        """Drop what is queued and wait for a rendering under way to end."""
        self._executor.shutdown(wait=True, cancel_futures=True)
