"""Signed HTTP notifications of rollout decisions (promoted, rolled back, paused) to an
operator's endpoint.

The rollout controller must never wait on the network: notify() only appends to a bounded
queue and one delivery thread posts the events, in order, retrying what the receiver may
accept later. Each body is signed (webhook_endpoint.py) and carries a delivery id that stays
the same across retries so a receiver can drop the duplicates a lost answer causes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.rollout.webhook_endpoint import WebhookEndpoint

__all__ = ["WebhookNotifier"]

_log = logging.getLogger(__name__)

_THREAD_NAME = "onnxgate-rollout-webhook"
# The body's own fields: a payload key with one of these names would contradict the headers
# (a delivery id receivers deduplicate by) or the event the body claims to be.
_RESERVED = frozenset({"event", "sent_at", "delivery"})


@dataclass(frozen=True, slots=True)
class _Delivery:
    event: str
    delivery: str
    body: bytes


class WebhookNotifier:
    """Posts rollout events to `url` on its own thread, signed with `secret`.

    notify() enqueues and returns; a full queue drops the event (the controller's next
    decision matters more than a backlog for an endpoint that is down). A connection error,
    timeout, 5xx or 429 is retried up to `attempts` times in all, `backoff_seconds * 2**n`
    apart, or as long as the answer's Retry-After says; neither wait exceeds
    `max_backoff_seconds`. Any other answer is final. Each retry calls `on_retry(event)`; each
    event ends in exactly one `on_result(event, outcome)` with outcome "delivered", "failed"
    (given up) or "dropped", called on the notifier's thread (or, for a drop, on the
    caller's); neither must block for long. ValueError for a URL or a secret that cannot work
    (WebhookEndpoint) or for limits out of range.
    """

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        timeout_seconds: float = 5.0,
        attempts: int = 8,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        queue_size: int = 100,
        on_result: Callable[[str, str], None] = lambda event, outcome: None,
        on_retry: Callable[[str], None] = lambda event: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._endpoint = WebhookEndpoint(url, secret)
        self._url_for_logs = self._endpoint.url_for_logs
        if (attempts < 1 or queue_size < 1 or timeout_seconds <= 0 or backoff_seconds < 0
                or max_backoff_seconds < backoff_seconds):  # fmt: skip
            raise ValueError(
                "webhook needs attempts >= 1, queue_size >= 1, timeout_seconds > 0 and"
                " 0 <= backoff_seconds <= max_backoff_seconds; got"
                f" {attempts}, {queue_size}, {timeout_seconds}, {backoff_seconds},"
                f" {max_backoff_seconds}"
            )
        self._timeout = timeout_seconds
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._on_retry = on_retry
        self._queue_size = queue_size
        self._on_result = on_result
        self._clock = clock
        self._pending: deque[_Delivery] = deque()
        self._changed = threading.Condition()  # guards _pending and _deadline
        self._deadline: float | None = None  # monotonic; set once, by the first stop()
        self._stop_requested = threading.Event()  # cuts a backoff wait short
        self._thread = threading.Thread(target=self._run, name=_THREAD_NAME, daemon=True)

    def start(self) -> None:
        with self._changed:
            if self._deadline is not None:
                raise RuntimeError("webhook notifier was stopped; it cannot start again")
        self._thread.start()

    def notify(self, event: str, payload: Mapping[str, object]) -> None:
        """Queue `event` with `payload`'s fields; never blocks. Events notified before start()
        wait for it. A payload that cannot be sent at all (not JSON, a reserved key) raises
        here, in the caller's tests, rather than failing later on the delivery thread."""
        if not event or not event.isascii() or not event.isprintable():
            raise ValueError(f"webhook event name must be printable ASCII: {event!r}")
        reserved = _RESERVED.intersection(payload)
        if reserved:
            raise ValueError(f"webhook payload must not set {sorted(reserved)}")
        delivery = uuid.uuid4().hex
        sent_at = datetime.fromtimestamp(self._clock(), tz=UTC).isoformat(timespec="milliseconds")
        fields = {"event": event, "sent_at": sent_at, "delivery": delivery, **payload}
        # Serialised now: the body is fixed (and signed) once, and a caller that changes its
        # payload afterwards does not change what is sent.
        body = json.dumps(fields, sort_keys=True).encode()
        with self._changed:
            if self._deadline is None and len(self._pending) < self._queue_size:
                self._pending.append(_Delivery(event, delivery, body))
                self._changed.notify()
                return
            stopped = self._deadline is not None
        _log.warning(
            "rollout webhook stopped; event dropped"
            if stopped
            else "rollout webhook queue full; event dropped",
            extra={"event": event, "url": self._url_for_logs, "queue_size": self._queue_size},
        )
        self._report(event, "dropped")

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Deliver what is queued for up to `timeout_seconds` more, then drop the rest. An
        attempt already in flight cannot be cut short: its outcome is reported when it ends,
        possibly after stop() returned (the thread is a daemon and holds no exit back)."""
        with self._changed:
            if self._deadline is None:
                self._deadline = time.monotonic() + timeout_seconds
                self._changed.notify_all()
            deadline = self._deadline
        self._stop_requested.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._drop_pending()

    def _run(self) -> None:
        while (item := self._next()) is not None:
            try:
                self._deliver(item)
            except Exception:  # the thread must outlive one bad event; the rest still go
                _log.exception(
                    "rollout webhook delivery failed",
                    extra={"event": item.event, "url": self._url_for_logs},
                )
                self._report(item.event, "failed")
        self._drop_pending()

    def _next(self) -> _Delivery | None:
        with self._changed:
            while not self._pending and self._deadline is None:
                self._changed.wait()
            if not self._pending or self._past_deadline():
                return None
            return self._pending.popleft()

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _attempt_timeout(self) -> float | None:
        """The socket timeout for the next attempt, None when stop()'s deadline has passed."""
        deadline = self._deadline
        if deadline is None:
            return self._timeout
        remaining = deadline - time.monotonic()
        return min(self._timeout, remaining) if remaining > 0 else None

    def _deliver(self, item: _Delivery) -> None:
        reason, wait = "not attempted", 0.0
        for attempt in range(self._attempts):
            if attempt > 0:
                self._report_retry(item.event)
                # stop() cuts the wait short: before its deadline there is no later to wait for.
                self._stop_requested.wait(wait)
            timeout = self._attempt_timeout()
            if timeout is None:
                self._give_up(item, "dropped", reason, attempt)
                return
            answer = self._endpoint.post(item.event, item.delivery, item.body, timeout)
            reason = answer.reason
            if not reason:
                self._report(item.event, "delivered")
                return
            if not answer.retry:
                attempt_count = attempt + 1
                break
            asked = answer.retry_after
            wait = min(self._max_backoff,
                       self._backoff * 2**attempt if asked is None else asked)  # fmt: skip
        else:
            attempt_count = self._attempts
        self._give_up(item, "failed", reason, attempt_count)

    def _give_up(self, item: _Delivery, outcome: str, reason: str, attempts: int) -> None:
        """Log and report an event that will not be delivered: `failed` after its attempts,
        `dropped` when stop()'s deadline came first."""
        message = "event dropped: stopping" if outcome == "dropped" else "not delivered"
        _log.warning(
            f"rollout webhook {message}",
            extra={"event": item.event, "url": self._url_for_logs, "reason": reason,
                   "attempts": attempts, "delivery": item.delivery},
        )  # fmt: skip
        self._report(item.event, outcome)

    def _drop_pending(self) -> None:
        with self._changed:
            dropped = list(self._pending)
            self._pending.clear()
        if not dropped:
            return
        _log.warning(
            "rollout webhook stopped before delivering; events dropped",
            extra={"events": [item.event for item in dropped], "url": self._url_for_logs},
        )
        for item in dropped:
            self._report(item.event, "dropped")

    def _report_retry(self, event: str) -> None:
        try:
            self._on_retry(event)
        except Exception:  # the caller's callback must not stop deliveries
            _log.exception("rollout webhook retry callback failed", extra={"event": event})

    def _report(self, event: str, outcome: str) -> None:
        try:
            self._on_result(event, outcome)
        except Exception:  # the caller's callback must not stop deliveries
            _log.exception("rollout webhook result callback failed", extra={"event": event})
