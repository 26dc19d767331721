"""The rollout webhook against real HTTP receivers on 127.0.0.1: signatures, retries, drops,
shutdown and ordering."""

from __future__ import annotations

import base64
import email.utils
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.rollout.webhook import WebhookNotifier
from gateway.rollout.webhook_endpoint import read_secret, retry_after, signature

pytestmark = pytest.mark.timeout(30)

SECRET = b"rollout-webhook-test-secret-0123"
THREAD_NAME = "onnxgate-rollout-webhook"


def receiver_accepts(secret: bytes, headers: Message, body: bytes) -> bool:
    """What a receiver does: recompute the signature over the raw body, compare in constant
    time."""
    sent = headers.get("X-Onnxgate-Signature", "")
    return hmac.compare_digest(sent, signature(secret, body))


@dataclass(frozen=True)
class Received:
    headers: Message
    body: bytes
    at: float  # time.monotonic() on arrival


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads: nothing outlives a test


class Receiver:
    """A real HTTP server answering each POST with the next scripted status (200 once the
    script is used up); with `hold` set, answers only after `release` (a slow or hung
    receiver)."""

    def __init__(self) -> None:
        self.statuses: list[int | tuple[int, dict[str, str]]] = []  # and headers to send
        self.hold = False
        self.release = threading.Event()
        self.requests: list[Received] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._changed:
                    receiver.requests.append(Received(self.headers, body, time.monotonic()))
                    scripted = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver._changed.notify_all()
                status, headers = scripted if isinstance(scripted, tuple) else (scripted, {})
                if receiver.hold:
                    receiver.release.wait(10)
                try:
                    self.send_response(status)
                    if 300 <= status < 400:
                        self.send_header("Location", receiver.url)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the notifier gave up waiting and closed the connection
                    pass

            def log_message(self, *args: object) -> None:  # keeps the test output quiet
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/rollout"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.requests) >= count, timeout), (
                f"{len(self.requests)} requests, expected {count}"
            )
            return list(self.requests)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


class Results:
    """The notifier's on_result, recorded in the order it was called."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str]] = []
        self._changed = threading.Condition()

    def __call__(self, event: str, outcome: str) -> None:
        with self._changed:
            self.outcomes.append((event, outcome))
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[str, str]]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.outcomes) >= count, timeout), (
                f"outcomes so far: {self.outcomes}"
            )
            return list(self.outcomes)


def _webhook_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == THREAD_NAME]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.close()


@pytest.fixture
def make_notifier(receiver: Receiver) -> Iterator[Callable[..., WebhookNotifier]]:
    """Notifiers with test-sized timeouts; stopped, and their threads gone, after the test."""
    made: list[WebhookNotifier] = []

    def make(url: str | None = None, **options: object) -> WebhookNotifier:
        settings: dict[str, object] = {
            "timeout_seconds": 2.0,
            "attempts": 3,
            "backoff_seconds": 0.01,
        }
        settings.update(options)
        notifier = WebhookNotifier(url or receiver.url, SECRET, **settings)  # type: ignore[arg-type]
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.stop(timeout_seconds=1.0)
    receiver.release.set()  # a held request answers, so its notifier thread can end
    for thread in _webhook_threads():
        thread.join(5)
    assert not _webhook_threads()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens: a connection is refused


def test_a_delivered_event_is_signed_and_carries_its_payload(receiver, make_notifier):
    results = Results()
    notifier = make_notifier(on_result=results, clock=lambda: 1_700_000_000.25)
    notifier.start()
    (thread,) = _webhook_threads()
    assert thread.daemon

    notifier.notify("promoted", {"model": "classifier", "version": "2", "weight": 100})

    assert results.wait_for(1) == [("promoted", "delivered")]
    (request,) = receiver.wait_for(1)
    body = json.loads(request.body)
    assert body == {
        "event": "promoted",
        "sent_at": body["sent_at"],
        "delivery": body["delivery"],
        "model": "classifier",
        "version": "2",
        "weight": 100,
    }
    assert datetime.fromisoformat(body["sent_at"]) == datetime.fromtimestamp(1_700_000_000.25, UTC)
    assert len(body["delivery"]) == 32 and int(body["delivery"], 16) >= 0
    assert request.headers["X-Onnxgate-Delivery"] == body["delivery"]
    assert request.headers["X-Onnxgate-Event"] == "promoted"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "onnxgate-rollout"
    assert request.headers["X-Onnxgate-Signature"].startswith("sha256=")
    assert receiver_accepts(SECRET, request.headers, request.body)
    assert not receiver_accepts(b"someone-elses-secret-0123456789", request.headers, request.body)
    assert not receiver_accepts(SECRET, request.headers, request.body.replace(b"100", b"0"))


def test_userinfo_in_the_url_is_sent_as_basic_authentication(receiver, make_notifier):
    results = Results()
    url = receiver.url.replace("http://", "http://hook:p%40ss@") + "?token=abc"
    notifier = make_notifier(url, on_result=results)
    notifier.start()
    notifier.notify("paused", {})
    assert results.wait_for(1) == [("paused", "delivered")]
    (request,) = receiver.wait_for(1)
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"hook:p@ss").decode()


@pytest.mark.parametrize("status", [500, 429])
def test_a_retryable_answer_is_retried_with_the_same_delivery_id(receiver, make_notifier, status):
    receiver.statuses = [status, status]
    results = Results()
    notifier = make_notifier(on_result=results)
    notifier.start()
    notifier.notify("rolled_back", {"model": "classifier"})

    assert results.wait_for(1) == [("rolled_back", "delivered")]
    requests = receiver.wait_for(3)
    assert len(requests) == 3
    assert len({request.headers["X-Onnxgate-Delivery"] for request in requests}) == 1
    assert len({request.body for request in requests}) == 1
    assert all(receiver_accepts(SECRET, r.headers, r.body) for r in requests)


def test_retries_ride_out_a_receiver_down_longer_than_a_few_tries(receiver, make_notifier):
    receiver.statuses = [503] * 6
    results, retries = Results(), list[str]()
    notifier = make_notifier(on_result=results, on_retry=retries.append, attempts=8,
                             backoff_seconds=0.01, max_backoff_seconds=0.05)  # fmt: skip
    notifier.start()
    notifier.notify("rolled_back", {"model": "credit"})
    assert results.wait_for(1) == [("rolled_back", "delivered")]
    assert len(receiver.wait_for(7)) == 7 and retries == ["rolled_back"] * 6


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_retry_after_is_honoured(receiver, make_notifier, form):
    # An HTTP date has whole seconds: 4 s away is at least 3 s once written, of which the
    # notifier's start and first try may take one.
    asked = "2" if form == "seconds" else email.utils.formatdate(time.time() + 4, usegmt=True)
    receiver.statuses = [(503, {"Retry-After": asked})]
    results = Results()
    notifier = make_notifier(on_result=results, backoff_seconds=0.01, max_backoff_seconds=10)
    notifier.start()
    notifier.notify("paused", {"model": "credit"})
    assert results.wait_for(1, timeout=10) == [("paused", "delivered")]
    first, second = receiver.wait_for(2)
    assert second.at - first.at >= 1.9  # the receiver's wait, not the 0.01 s backoff


def test_retry_after_is_capped_by_the_longest_backoff(receiver, make_notifier):
    receiver.statuses = [(503, {"Retry-After": "3600"})]
    results = Results()
    notifier = make_notifier(on_result=results, backoff_seconds=0.01, max_backoff_seconds=0.2)
    notifier.start()
    notifier.notify("promoted", {})
    assert results.wait_for(1) == [("promoted", "delivered")]  # in 5 s, not an hour


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), (" 7 ", 7.0), ("-5", None), ("soon", None), ("", None), (None, None),
     ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0), ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0)],
)  # fmt: skip
def test_retry_after_reads_seconds_and_http_dates(value, expected):
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:27:50 GMT").timestamp()
    assert retry_after(value, now) == expected


@pytest.mark.parametrize("status", [400, 302])
def test_a_client_error_or_a_redirect_is_final(receiver, make_notifier, status, caplog):
    receiver.statuses = [status]
    results = Results()
    notifier = make_notifier(on_result=results)
    notifier.start()
    with caplog.at_level(logging.WARNING, logger="gateway.rollout.webhook"):
        notifier.notify("promoted", {})
        assert results.wait_for(1) == [("promoted", "failed")]
    notifier.stop()
    assert len(receiver.requests) == 1  # failed is reported after the last attempt
    (record,) = caplog.records
    assert record.reason == f"HTTP {status}"
    assert record.attempts == 1


def test_a_refused_connection_is_retried_then_fails_without_logging_secrets(make_notifier, caplog):
    port = _closed_port()
    results = Results()
    notifier = make_notifier(
        f"http://hook:url-password@127.0.0.1:{port}/hooks?token=query-token",
        on_result=results,
        backoff_seconds=0.02,
    )
    notifier.start()
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG, logger="gateway.rollout.webhook"):
        notifier.notify("paused", {"model": "classifier"})
        assert results.wait_for(1) == [("paused", "failed")]
    assert time.monotonic() - started >= 0.02 + 0.04  # two backoffs: three attempts

    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.event == "paused"
    assert record.url == f"http://127.0.0.1:{port}/hooks"
    assert record.attempts == 3
    assert "ConnectionRefusedError" in record.reason
    for logged in caplog.records:
        text = logged.getMessage() + repr(vars(logged))
        for secret in (SECRET.decode(), "url-password", "query-token"):
            assert secret not in text


def test_a_receiver_that_does_not_answer_in_time_is_retried(receiver, make_notifier, caplog):
    receiver.hold = True
    results = Results()
    notifier = make_notifier(on_result=results, timeout_seconds=0.2, attempts=2)
    notifier.start()
    with caplog.at_level(logging.WARNING, logger="gateway.rollout.webhook"):
        notifier.notify("promoted", {})
        assert results.wait_for(1) == [("promoted", "failed")]
    assert len(receiver.requests) == 2
    (record,) = caplog.records
    assert "timed out" in record.reason
    assert record.attempts == 2


def test_notify_never_blocks_and_drops_what_does_not_fit(receiver, make_notifier, caplog):
    receiver.hold = True  # the first delivery waits; everything else queues behind it
    results = Results()
    notifier = make_notifier(on_result=results, queue_size=10, timeout_seconds=10.0)
    notifier.start()
    with caplog.at_level(logging.WARNING, logger="gateway.rollout.webhook"):
        started = time.monotonic()
        for n in range(1000):
            notifier.notify("paused", {"n": n})
        assert time.monotonic() - started < 1.0
    dropped = [outcome for outcome in results.outcomes if outcome == ("paused", "dropped")]
    assert len(dropped) >= 1000 - 10 - 1  # the queue, and perhaps the one in flight
    assert len(results.outcomes) == len(dropped)
    assert sum(r.getMessage() == "rollout webhook queue full; event dropped"
               for r in caplog.records) == len(dropped)  # fmt: skip

    receiver.release.set()
    notifier.stop(timeout_seconds=5.0)
    outcomes = results.wait_for(1000)
    assert outcomes.count(("paused", "delivered")) == 1000 - len(dropped)
    assert len(receiver.requests) == 1000 - len(dropped)


def test_stop_gives_up_on_a_hung_receiver_within_its_timeout(receiver, make_notifier):
    receiver.hold = True
    results = Results()
    notifier = make_notifier(on_result=results, timeout_seconds=10.0)
    notifier.start()
    for event in ("first", "second", "third"):
        notifier.notify(event, {})
    receiver.wait_for(1)  # "first" is in flight and gets no answer

    started = time.monotonic()
    notifier.stop(timeout_seconds=0.3)
    assert time.monotonic() - started < 1.0
    assert results.outcomes == [("second", "dropped"), ("third", "dropped")]

    started = time.monotonic()
    notifier.stop(timeout_seconds=0.3)  # again: nothing left to wait for
    assert time.monotonic() - started < 0.5
    notifier.notify("late", {})
    assert results.outcomes[-1] == ("late", "dropped")

    receiver.release.set()  # the attempt in flight still reports how it ended
    assert ("first", "delivered") in results.wait_for(4)
    for thread in _webhook_threads():
        thread.join(5)
    assert not _webhook_threads()


def test_stop_on_a_notifier_never_started():
    results = Results()
    notifier = WebhookNotifier("http://127.0.0.1:9/hook", SECRET, on_result=results)
    notifier.notify("promoted", {})
    notifier.stop()
    notifier.stop()
    assert results.outcomes == [("promoted", "dropped")]
    with pytest.raises(RuntimeError, match="stopped"):
        notifier.start()


def test_events_arrive_in_the_order_notified(receiver, make_notifier):
    results = Results()
    notifier = make_notifier(on_result=results)
    notifier.start()
    events = [f"step-{n}" for n in range(20)]
    for event in events:
        notifier.notify(event, {})
    notifier.stop(timeout_seconds=5.0)
    assert results.outcomes == [(event, "delivered") for event in events]
    assert [r.headers["X-Onnxgate-Event"] for r in receiver.requests] == events
    assert [json.loads(r.body)["event"] for r in receiver.requests] == events


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("ftp://example.com/hook", "ftp://example.com/hook"),
        ("file:///etc/hook", "file:///etc/hook"),
        ("http:///hook", "http:///hook"),
        ("example.com/hook", "example.com/hook"),
        ("https://example.com:99999/hook", "https://example.com:99999/hook"),
        ("ftp://user:url-password@example.com/hook?token=t", "ftp://example.com/hook"),
    ],
)
def test_a_url_that_is_not_http_with_a_host_is_refused(url, named):
    with pytest.raises(ValueError, match="webhook URL") as refused:
        WebhookNotifier(url, SECRET)
    assert named in str(refused.value)
    assert "url-password" not in str(refused.value)


def test_a_short_secret_is_refused():
    with pytest.raises(ValueError, match="at least 16"):
        WebhookNotifier("https://example.com/hook", b"tiny")


def test_a_payload_that_would_contradict_the_headers_is_refused():
    notifier = WebhookNotifier("https://example.com/hook", SECRET)
    with pytest.raises(ValueError, match="delivery"):
        notifier.notify("promoted", {"delivery": "mine"})
    with pytest.raises(ValueError, match="printable"):
        notifier.notify("promoted\r\nX-Injected: 1", {})
    with pytest.raises(TypeError):
        notifier.notify("promoted", {"when": datetime.now(UTC)})
    notifier.stop()


def test_read_secret_strips_whitespace(tmp_path: Path):
    path = tmp_path / "webhook-secret"
    path.write_bytes(b"  " + SECRET + b"\n")
    assert read_secret(path) == SECRET


def test_read_secret_refuses_short_missing_and_unreadable_files(tmp_path: Path):
    short = tmp_path / "short-secret"
    short.write_bytes(b"tiny-value\n")
    with pytest.raises(ValueError, match="at least 16") as refused:
        read_secret(short)
    assert str(short) in str(refused.value)
    assert "tiny-value" not in str(refused.value)

    missing = tmp_path / "missing-secret"
    with pytest.raises(ValueError, match="cannot be read") as refused:
        read_secret(missing)
    assert str(missing) in str(refused.value)

    with pytest.raises(ValueError, match="cannot be read") as refused:
        read_secret(tmp_path)  # a directory
    assert str(tmp_path) in str(refused.value)
