"""The receiver of rollout webhooks: its URL and credentials, the signature of each body, and
one POST to it.

Each body is signed like GitHub's X-Hub-Signature-256 so a receiver can tell the gateway's
events from anyone else's.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.client
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

__all__ = ["Attempt", "WebhookEndpoint", "read_secret", "retry_after", "signature"]

_MIN_SECRET_BYTES = 16
_USER_AGENT = "onnxgate-rollout"


def signature(secret: bytes, body: bytes) -> str:
    """The X-Onnxgate-Signature value: "sha256=" and the hex HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def read_secret(path: Path) -> bytes:
    """The shared secret from a file (a mounted Kubernetes secret ends with a newline, an
    editor may add one: surrounding whitespace is not part of it). A secret short enough to
    guess is refused here rather than signing every event with it."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"webhook secret file {path} cannot be read: {exc.strerror}") from None
    if len(secret) < _MIN_SECRET_BYTES:
        raise ValueError(
            f"webhook secret in {path} is {len(secret)} bytes; at least {_MIN_SECRET_BYTES}"
        )
    return secret


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would repeat a redirected POST as a GET without its body and report the GET's
    2xx as success; a redirect is the receiver's configuration error and fails the event."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def _describe(reason: BaseException | str) -> str:
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return reason


def _netloc_without_userinfo(parts: SplitResult) -> str:
    return parts.netloc.rpartition("@")[2]


class WebhookEndpoint:
    """Posts signed bodies to `url`; ValueError at construction for a URL or a secret that
    cannot work.

    Userinfo in the URL (https://user:password@host/...) is sent as HTTP basic authentication
    and never logged; neither is the query string, which receivers use for tokens as well:
    `url_for_logs` has neither.
    """

    def __init__(self, url: str, secret: bytes) -> None:
        parts = urlsplit(url)
        self.url_for_logs = urlunsplit(
            (parts.scheme, _netloc_without_userinfo(parts), parts.path, "", "")
        )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"webhook URL must be http:// or https:// with a host: {self.url_for_logs}"
            )
        try:
            parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
        except ValueError:
            raise ValueError(f"webhook URL has an invalid port: {self.url_for_logs}") from None
        if len(secret) < _MIN_SECRET_BYTES:
            raise ValueError(f"webhook secret is {len(secret)} bytes; at least {_MIN_SECRET_BYTES}")
        self._url = urlunsplit(
            (parts.scheme, _netloc_without_userinfo(parts), parts.path, parts.query, "")
        )
        # urllib does not turn userinfo into a header: left in the URL it becomes part of the
        # host name and every attempt fails.
        self._authorization: str | None = None
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        self._secret = secret
        self._opener = urllib.request.build_opener(_RefuseRedirects())

    def post(self, event: str, delivery: str, body: bytes, timeout: float) -> Attempt:
        """One attempt: delivered (an empty reason), or the reason, whether to retry (a
        connection error, timeout, 5xx or 429 may succeed later; any other answer is final)
        and how long the receiver asked to be left alone (Retry-After), if it did."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            "X-Onnxgate-Event": event,
            "X-Onnxgate-Delivery": delivery,
            "X-Onnxgate-Signature": signature(self._secret, body),
        }
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=timeout):
                return Attempt("", False)  # urllib raises HTTPError for anything but 2xx
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response's socket
            retry = exc.code == 429 or exc.code >= 500
            wait = retry_after(exc.headers.get("Retry-After"), time.time()) if retry else None
            return Attempt(f"HTTP {exc.code}", retry, wait)
        except urllib.error.URLError as exc:  # refused, unresolvable, TLS, timed out connecting
            return Attempt(_describe(exc.reason), True)
        except (OSError, http.client.HTTPException) as exc:  # timed out or cut off answering
            return Attempt(_describe(exc), True)


@dataclass(frozen=True, slots=True)
class Attempt:
    reason: str  # empty when delivered
    retry: bool = False
    retry_after: float | None = None  # seconds the receiver asked for, if it did


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks for (RFC 9110: a number of seconds or an HTTP date),
    None when absent or unreadable (the notifier's own backoff applies then)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; obsolete forms may not say so
        return None
    return max(0.0, when.timestamp() - now)
