"""Which page a path asks for, and the response: the page rendered from the worker's last
reading (kept until the next one), or one saying the first reading is under way; 404 for an
unknown page or model."""

from __future__ import annotations

import threading

from gateway.metrics.http.messages import Response
from gateway.status.pages.html import CONTENT_SECURITY_POLICY, clock, e, model_href, page
from gateway.status.pages.model import model_body
from gateway.status.pages.overview import overview_body
from gateway.status.pages.rollout import rollout_body
from gateway.status.worker import Reading, StatusWorker

__all__ = ["PREFIX", "StatusSite"]

PREFIX = "/status"
_HEADERS = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


class StatusSite:
    """Called on the metrics server's render threads; the registry is never read here."""

    def __init__(self, worker: StatusWorker) -> None:
        self._worker = worker
        self._lock = threading.Lock()  # guards _rendered across render threads
        self._rendered: dict[str, tuple[Reading, Response]] = {}

    def respond(self, path: str) -> Response:
        """The response for a path under /status (already percent-decoded)."""
        parts = [p for p in path.removeprefix(PREFIX).split("/") if p]
        model = parts[1] if len(parts) in (2, 3) and parts[0] == "models" else None
        known = not parts or (model is not None and parts[2:] in ([], ["rollout"]))
        if not known:
            return self._not_found(
                "No such page",
                "The status pages are /status, "
                "/status/models/MODEL and /status/models/MODEL/rollout.",
            )
        self._worker.viewed(model)
        reading = self._worker.reading
        if reading.overview is None:
            return self._first_reading(reading)
        key = "/".join(parts)
        with self._lock:
            cached = self._rendered.get(key)
        if cached is not None and cached[0] is reading:
            return cached[1]
        response = self._render(reading, parts, model)
        with self._lock:
            self._rendered = {k: v for k, v in self._rendered.items() if v[0] is reading}
            self._rendered[key] = (reading, response)
        return response

    def _render(self, reading: Reading, parts: list[str], model: str | None) -> Response:
        overview = reading.overview
        assert overview is not None
        refresh = self._worker.refresh_seconds
        meta = _meta(reading, overview.taken_at, overview.gateways, refresh)
        if model is None:
            return _ok(page("Status", meta + overview_body(overview), refresh))
        summary = next((m for m in overview.models if m.name == model), None)
        if summary is None:
            return self._not_found(f"No model {model}", "The registry has no such model.")
        crumbs = [(model_href(model), f"Model {model}")]
        detail = reading.details.get(model)
        if parts[2:] == ["rollout"]:
            title = f"Rollout of {model}"
            if summary.rollout is None:
                body = '<p class="note">No rollout: gatectl rollout start.</p>'
            elif detail is None or detail.error:
                body = (
                    '<p class="note">Reading the rollout\'s history; the page refreshes itself.</p>'
                )
            else:
                body = rollout_body(summary.rollout, detail.rollout_svg, detail.rollout_history)
            return _ok(
                page(
                    title,
                    meta + body,
                    refresh,
                    [*crumbs, (f"{model_href(model)}/rollout", "Rollout")],
                )
            )
        # A page seen for the first time waits a second for its reading, not a refresh.
        wait = refresh if detail is not None else 1.0
        return _ok(page(f"Model {model}", meta + model_body(summary, detail), wait, crumbs))

    def _not_found(self, title: str, text: str) -> Response:
        body = page(title, f"<p>{e(text)}</p>", self._worker.refresh_seconds)
        return Response("404 Not Found", _HEADERS, body)

    def _first_reading(self, reading: Reading) -> Response:
        """Before the first reading: a page saying so that reloads itself in a second (a
        page, not an error: the browser shows it and comes back)."""
        text = "Reading the registry; this page refreshes itself in a second."
        if reading.error:
            text = f"The registry cannot be read: {reading.error}. Retrying."
        return _ok(page("Status", f'<p class="note" role="status">{e(text)}</p>', 1.0))


def _ok(body: bytes) -> Response:
    return Response("200 OK", _HEADERS, body)


def _meta(reading: Reading, taken_at: float, gateways: int, refresh: float) -> str:
    text = (
        f"Read from the registry at {clock(taken_at)}; {gateways} live"
        f" gateway{'s' if gateways != 1 else ''}; refreshes every {refresh:g}s."
    )
    error = ""
    if reading.error:
        error = (
            f'<p class="error" role="alert">The registry could not be read at'
            f" {clock(reading.error_at)}: {e(reading.error)}. Showing the last"
            " reading.</p>"
        )
    return f'<p class="meta">{e(text)}</p>{error}'
