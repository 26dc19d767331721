"""The HTTP of /metrics without I/O: take request heads from the bytes received, parse them,
decide the answer, and format a response. What make_wsgi_app answers is kept: any path but
/favicon.ico (and, with status pages, /status and below) serves the exposition, OPTIONS lists
the methods, others get 405; with tokens, 401 and 403 come first."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import formatdate
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client.exposition import gzip_accepted

from gateway.security.tokens import TokenTable

__all__ = [
    "Exposition",
    "HeadBuffer",
    "HeadTooLarge",
    "MalformedRequest",
    "Page",
    "Request",
    "Response",
    "answer",
    "encode_response",
    "head_end",
    "parse_head",
]

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CRLF = b"\r\n"
_VERSION = re.compile(r"HTTP/1\.[01]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: methods, header names
_ALLOW = ("Allow", "OPTIONS,GET")
STATUS_PREFIX = "/status"


class MalformedRequest(ValueError):
    """Raised by parse_head for a head that is not an HTTP/1.x request; answered with 400."""


class HeadTooLarge(ValueError):
    """Raised by HeadBuffer.take_head for a head over the limit; answered with 431."""


@dataclass(frozen=True, slots=True)
class Request:
    """A request head; header names lower-case, repeated headers joined with commas."""

    method: str
    target: str
    version: str
    headers: dict[str, str]

    def keeps_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless the client says close; HTTP/1.0 never does."""
        options = {o.strip().lower() for o in self.headers.get("connection", "").split(",")}
        return self.version == "HTTP/1.1" and "close" not in options

    def has_body(self) -> bool:
        """A body is never read: a request announcing one is answered, then the connection
        closed, so its bytes are never taken for the next request."""
        length = self.headers.get("content-length", "0").strip()
        return "transfer-encoding" in self.headers or length != "0"

    def keeps_connection(self, response: Response) -> bool:
        """Whether the connection stays open for the next request after `response`: only a
        200, and only when the client keeps it alive and sent no body."""
        return response.status.startswith("200 ") and self.keeps_alive() and not self.has_body()


@dataclass(frozen=True, slots=True)
class Response:
    status: str  # "200 OK"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Exposition:
    """What a scrape asks to render: equal ones may share one rendering."""

    accept: str
    gzip: bool
    names: frozenset[str] | None = field(default=None)  # ?name[]=...: only these samples


@dataclass(frozen=True, slots=True)
class Page:
    """A status page to render: the path, percent-decoded."""

    path: str


class HeadBuffer:
    """The bytes a connection received and has not taken yet, and the request heads taken
    from them; a head trickled in a byte at a time is scanned once, not once per byte."""

    def __init__(self, max_head_bytes: int) -> None:
        self._max_head_bytes = max_head_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer already searched for the end of the head

    def __bool__(self) -> bool:
        """Whether anything received is still to be taken (a pipelined request)."""
        return bool(self._buffer)

    def add(self, data: bytes) -> None:
        self._buffer += data

    def clear(self) -> None:
        self._buffer.clear()
        self._scanned = 0

    def take_head(self) -> bytes | None:
        """The next complete request head, taken out of the buffer; None while it is still
        incomplete and within the limit, HeadTooLarge once it is over."""
        if self._buffer.startswith((b"\r", b"\n")):  # blank lines may precede a request
            self._buffer = bytearray(self._buffer.lstrip(_CRLF))
            self._scanned = 0
        end = head_end(self._buffer, self._scanned)
        if end < 0 and len(self._buffer) <= self._max_head_bytes:
            self._scanned = len(self._buffer)
            return None
        if end < 0 or end > self._max_head_bytes:
            raise HeadTooLarge(f"request head over {self._max_head_bytes} bytes")
        head = bytes(self._buffer[:end])
        del self._buffer[:end]
        self._scanned = 0
        return head


def head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """The index just past the blank line ending the head in `buffer`, or -1; searching from
    `start` (less the terminator's length) lets a trickled head be scanned once."""
    found = _HEAD_END.search(buffer, max(0, start - 3))
    return -1 if found is None else found.end()


def parse_head(head: bytes) -> Request:
    """The request in `head` (request line and headers, terminator included)."""
    lines = head.decode("latin-1").split("\n")
    request_line = lines[0].rstrip("\r")
    parts = request_line.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise MalformedRequest("bad request line")
    method, target, version = parts
    if not _VERSION.fullmatch(version):
        raise MalformedRequest("not HTTP/1.0 or HTTP/1.1")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):  # also refuses obs-fold continuations
            raise MalformedRequest("bad header line")
        name, value = name.lower(), value.strip(" \t")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return Request(method, target, version, headers)


def _refusal(request: Request, tokens: TokenTable) -> Response | None:
    caller = tokens.identify(request.headers.get("authorization"))
    if caller is None:
        return Response(
            "401 Unauthorized",
            (("WWW-Authenticate", 'Bearer realm="metrics"'), ("Content-Type", "text/plain")),
            b"expected header 'Authorization: Bearer <token>' with a known token\n",
        )
    if "metrics" not in caller[1]:
        return Response(
            "403 Forbidden",
            (("Content-Type", "text/plain"),),
            f"token {caller[0]!r} lacks the 'metrics' scope\n".encode(),
        )
    return None


def answer(
    request: Request, tokens: TokenTable | None, pages: bool = False
) -> Response | Exposition | Page:
    """The response, or the exposition or status page (with `pages`) to render for it."""
    if tokens is not None:
        refusal = _refusal(request, tokens)
        if refusal is not None:
            return refusal
    if request.method == "OPTIONS":
        return Response("200 OK", (_ALLOW,))
    if request.method != "GET":
        status = "405 Method Not Allowed"
        body = f"# HTTP {status}: {request.method}; use OPTIONS or GET\n".encode()
        return Response(status, (_ALLOW,), body)
    target = urlsplit(request.target)
    if unquote(target.path, "iso-8859-1") == "/favicon.ico":
        return Response("200 OK")  # browsers ask; make_wsgi_app answers it empty
    path = unquote(target.path, "utf-8")
    if pages and (path == STATUS_PREFIX or path.startswith(STATUS_PREFIX + "/")):
        return Page(path)
    names = parse_qs(target.query).get("name[]")
    return Exposition(
        request.headers.get("accept", ""),
        gzip_accepted(request.headers.get("accept-encoding", "")),
        None if names is None else frozenset(names),
    )


def encode_response(response: Response, *, keep_alive: bool, head_only: bool = False) -> bytes:
    """The bytes of `response`; without a body for HEAD, with Connection: close unless kept."""
    lines = [f"HTTP/1.1 {response.status}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    lines.append(f"Content-Length: {len(response.body)}")
    lines.append(f"Date: {formatdate(usegmt=True)}")
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body
