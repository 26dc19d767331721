"""The /metrics server cannot be held: a bounded set of threads whatever connects, a deadline
for every request head (TLS handshake included), a connection cap that evicts tricklers
before it locks out a scraper, and counters for what it refused."""

from __future__ import annotations

import gzip
import http.client
import json
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client import CollectorRegistry, Counter, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.metrics.http import MetricsLimits, MetricsServer, start_metrics_server
from gateway.metrics.http.limits import ConnectionTable
from gateway.metrics.http.messages import Exposition, Response, answer, parse_head
from gateway.metrics.http.render import render
from gateway.metrics.supervisor import SupervisorMetrics
from gateway.security.tokens import TokenTable
from tests.support.gateways import eventually
from tests.support.redis_server import make_certificates

REJECTED = "onnxgate_metrics_connections_rejected_total"
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n"
TRICKLERS = 1000
METRICS_TOKEN = "metrics-token-0123456789abcdef"
INFER_TOKEN = "infer-token-0123456789abcdef"


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    requests = Counter("demo_requests", "Requests.", ["code"], registry=registry)
    for code in range(200):
        requests.labels(str(code)).inc(code)
    return registry


def _rejected(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value(REJECTED, {"reason": reason}) or 0.0


def _threads() -> int:
    """Every thread of this process, Python's or not."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


def _rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    return kib / 1024


def _server_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("onnxgate-metrics")]


def _scrape(port: int, timeout: float = 5.0) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def _closed_after(sock: socket.socket, timeout: float) -> float:
    """Seconds until the server closes `sock` (reading and dropping what it sends)."""
    started = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def _still_open(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(1) != b""
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False


@pytest.fixture
def serve() -> Iterator[Any]:
    """Factory for metrics servers; every one is shut down at the end of the test."""
    servers: list[MetricsServer] = []

    def start(registry: CollectorRegistry, **kwargs: Any) -> MetricsServer:
        server = start_metrics_server(0, "127.0.0.1", registry, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def enough_files() -> Iterator[None]:
    """Room for a thousand client sockets and the server's side of them in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * TRICKLERS
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# `count` clients sending one byte of a request a second from one thread of their own
# process (so they do not share the server's GIL); a client the server closes reconnects on the
# next tick, so the pressure never lets up. Runs until its stdin closes, then prints its counts.
_TRICKLERS = """
import json, selectors, socket, sys, threading, time
port, count, request = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode()
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
selector, sent = selectors.DefaultSelector(), {}
stats = {"connects": 0, "closed_by_server": 0}
next_tick = time.monotonic()
while not done.is_set():
    if time.monotonic() >= next_tick:
        next_tick += 1.0
        while len(sent) < count:
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            selector.register(sock, selectors.EVENT_READ)
            sent[sock] = 0
            stats["connects"] += 1
        for sock, n in list(sent.items()):
            at = n % (len(request) - 4)  # never the blank line
            try:
                sock.send(request[at : at + 1])
                sent[sock] = n + 1
            except OSError:  # not connected yet, or closed
                pass
    for key, _ in selector.select(timeout=0.05):
        try:
            data = key.fileobj.recv(4096)
        except OSError:
            data = b""
        if not data:
            selector.unregister(key.fileobj)
            key.fileobj.close()
            del sent[key.fileobj]
            stats["closed_by_server"] += 1
print(json.dumps(stats))
"""


class _Tricklers:
    """The trickling clients' process."""

    def __init__(self, port: int, count: int) -> None:
        self._command = [sys.executable, "-c", _TRICKLERS, str(port), str(count), REQUEST.decode()]
        self.stats: dict[str, int] = {}

    def __enter__(self) -> _Tricklers:
        self._process = subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self._process.communicate("", timeout=30)
        if self._process.returncode == 0:
            self.stats = json.loads(out)


def _scrape_over(port: int, context: ssl.SSLContext | None) -> tuple[int, bytes]:
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("over_tls", [False, True], ids=["plain", "tls"])
def test_scrapes_keep_succeeding_under_a_thousand_tricklers_on_bounded_threads(
    serve, enough_files, tls, over_tls
):
    certs, _ = tls
    registry = _registry()
    limits = MetricsLimits(request_timeout=2.0)
    context = _client_context(certs) if over_tls else None
    threads_before, rss_before = _threads(), _rss_mib()
    server = serve(
        registry, limits=limits, ssl_context=_server_context(certs) if over_tls else None
    )
    assert _scrape_over(server.server_port, context)[0] == 200
    latencies: list[float] = []
    threads_during = 0
    with _Tricklers(server.server_port, TRICKLERS) as tricklers:
        eventually(lambda: _rejected(registry, "evicted") >= TRICKLERS - 256, timeout=20)
        for _ in range(20):
            started = time.monotonic()
            status, body = _scrape_over(server.server_port, context)
            latencies.append(time.monotonic() - started)
            assert status == 200 and b"demo_requests_total" in body
            open_now = registry.get_sample_value("onnxgate_metrics_connections_open")
            assert open_now is not None and open_now <= limits.max_connections
            threads_during = max(threads_during, _threads())
            time.sleep(0.25)
        server_threads = _server_threads()
    rss_after = _rss_mib()
    counts = {r: int(_rejected(registry, r)) for r in ("evicted", "limit", "timeout", "handshake")}
    print(
        f"\n{'TLS' if over_tls else 'plain'}: threads before {threads_before}, peak during"
        f" {threads_during}; scrape latency median {statistics.median(latencies) * 1000:.1f} ms,"
        f" max {max(latencies) * 1000:.1f} ms; RSS {rss_before:.1f} -> {rss_after:.1f} MiB;"
        f" tricklers {tricklers.stats}; rejected {counts}"
    )
    # The loop's thread and the render pool, however many connect; the old server had one
    # thread per connection.
    assert len(server_threads) <= 1 + limits.render_threads, server_threads
    assert threads_during <= threads_before + 1 + limits.render_threads
    assert tricklers.stats["closed_by_server"] >= TRICKLERS - limits.max_connections
    assert statistics.median(latencies) < 0.5
    assert max(latencies) < 3.0


def test_a_silent_client_is_closed_after_the_request_timeout(serve):
    registry = _registry()
    server = serve(registry, limits=MetricsLimits(request_timeout=1.0))
    with _connect(server.server_port) as silent:
        waited = _closed_after(silent, timeout=5)
    assert 0.9 <= waited < 3.0
    assert _rejected(registry, "timeout") == 1


def test_the_timeout_bounds_the_whole_head_not_each_read(serve):
    registry = _registry()
    server = serve(registry, limits=MetricsLimits(request_timeout=1.0))
    with _connect(server.server_port) as trickler:
        started = time.monotonic()
        try:
            for byte in REQUEST[:-4]:  # a byte every 0.1 s: each read is quick
                trickler.sendall(bytes([byte]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        waited = time.monotonic() - started + _closed_after(trickler, timeout=5)
    assert 0.9 <= waited < 3.0
    assert _rejected(registry, "timeout") == 1


def test_at_the_cap_the_oldest_connection_without_a_request_is_evicted(serve):
    registry = _registry()
    server = serve(registry, limits=MetricsLimits(max_connections=3))
    port = server.server_port
    silent = [_connect(port) for _ in range(3)]
    try:
        eventually(lambda: registry.get_sample_value("onnxgate_metrics_connections_open") == 3)
        assert _scrape(port)[0] == 200  # admitted by evicting the oldest
        assert _closed_after(silent[0], timeout=5) < 1.0
        assert _still_open(silent[1]) and _still_open(silent[2])
        assert _rejected(registry, "evicted") == 1
        assert _rejected(registry, "limit") == 0
    finally:
        for sock in silent:
            sock.close()


class _Stalling(Collector):
    """A collector that holds the server's renderings until released (not the test's reads)."""

    def __init__(self) -> None:
        self.entered: list[str] = []  # appends are atomic; `+= 1` from two threads is not
        self.release = threading.Event()

    def collect(self) -> Iterator[Metric]:
        thread = threading.current_thread().name
        if thread.startswith("onnxgate-metrics-render"):
            self.entered.append(thread)
            assert self.release.wait(10)
        yield GaugeMetricFamily("stalling", "Held until released.", value=1.0)


def test_at_the_cap_with_every_request_being_answered_new_connections_are_refused(serve):
    registry = _registry()
    stalling = _Stalling()
    registry.register(stalling)
    server = serve(registry, limits=MetricsLimits(max_connections=2, render_threads=2))
    port = server.server_port
    # Two different expositions, so they do not share one rendering: both threads held.
    busy = [_connect(port), _connect(port)]
    busy[0].sendall(REQUEST)
    busy[1].sendall(REQUEST.replace(b"*/*", b"application/openmetrics-text"))
    try:
        eventually(lambda: len(stalling.entered) == 2)
        with _connect(port) as refused:
            assert _closed_after(refused, timeout=5) < 1.0
        assert _rejected(registry, "limit") == 1
        stalling.release.set()
        for sock in busy:
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        stalling.release.set()
        for sock in busy:
            sock.close()


def test_a_head_over_the_limit_is_answered_431_and_counted(serve):
    registry = _registry()
    server = serve(registry)
    with _connect(server.server_port) as client:
        client.sendall(b"GET /metrics HTTP/1.1\r\nX-Filler: " + b"a" * 9000 + b"\r\n\r\n")
        client.settimeout(5)
        assert client.recv(65536).startswith(b"HTTP/1.1 431 ")
    assert _rejected(registry, "too_large") == 1


def test_a_malformed_request_is_answered_400_and_counted(serve):
    registry = _registry()
    server = serve(registry)
    with _connect(server.server_port) as client:
        client.sendall(b"hello there\r\n\r\n")
        client.settimeout(5)
        assert client.recv(65536).startswith(b"HTTP/1.1 400 ")
    assert _rejected(registry, "malformed") == 1


def test_a_kept_alive_connection_serves_scrape_after_scrape_then_idles_out(serve):
    registry = _registry()
    server = serve(registry, limits=MetricsLimits(idle_timeout=0.5))
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)
    try:
        sockets = set()
        for _ in range(3):
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            assert response.status == 200 and b"demo_requests_total" in response.read()
            sockets.add(id(connection.sock))
        assert len(sockets) == 1  # one connection for the three scrapes
        assert connection.sock is not None
        assert _closed_after(connection.sock, timeout=5) < 2.0  # idle past idle_timeout
        assert sum(_rejected(registry, r) for r in ("timeout", "evicted", "limit")) == 0
    finally:
        connection.close()


def test_pipelined_requests_are_answered_in_order(serve):
    registry = _registry()
    server = serve(registry)
    with _connect(server.server_port) as client:
        requests = b"OPTIONS /metrics HTTP/1.1\r\n\r\n" * 3000  # deeper than the stack goes
        client.sendall(requests + b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        received = bytearray()
        client.settimeout(10)
        while chunk := client.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK\r\nAllow: OPTIONS,GET\r\n") == 3000
    assert received.rindex(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain") > received.rindex(
        b"Allow: OPTIONS,GET"
    )
    assert b"demo_requests_total" in received


def test_a_client_pipelining_without_reading_is_dropped_not_buffered(serve):
    registry = _registry()
    server = serve(registry)
    size = len(_scrape(server.server_port)[1])
    sent = 3000  # far more responses than the kernel's socket buffers hold
    with _connect(server.server_port) as client:
        eventually(lambda: registry.get_sample_value("onnxgate_metrics_connections_open") == 1)
        client.sendall(REQUEST * sent)  # and reads nothing until the server has given up
        eventually(
            lambda: registry.get_sample_value("onnxgate_metrics_connections_open") == 0,
            timeout=30,
        )
        received = 0
        client.settimeout(5)
        try:
            while chunk := client.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
    assert received < sent * size / 2


def test_a_kept_alive_scraper_is_evicted_only_after_connections_without_a_request():
    table: ConnectionTable[str] = ConnectionTable(3)
    assert table.admit("scraper") == (True, None)
    table.busy("scraper")  # its request came
    table.evictable("scraper", kept=True)  # answered; waits for the next scrape
    assert table.admit("trickler-1") == (True, None)
    assert table.admit("trickler-2") == (True, None)
    assert table.admit("trickler-3") == (True, "trickler-1")  # oldest first
    assert table.admit("trickler-4") == (True, "trickler-2")
    table.busy("trickler-3")
    table.busy("trickler-4")
    assert table.admit("newcomer") == (True, "scraper")  # only then the kept one
    table.busy("newcomer")
    assert table.admit("late") == (False, None)  # every connection is being answered
    assert len(table) == 3


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], TokenTable]:
    certs = make_certificates(tmp_path_factory.mktemp("certs"))
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text(f"prometheus metrics {METRICS_TOKEN}\npayments infer {INFER_TOKEN}\n")
    return certs, TokenTable.load(tokens)


def _server_context(certs: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs["server_cert"], certs["server_key"])
    context.load_verify_locations(cafile=certs["ca"])
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _client_context(certs: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs["ca"])
    context.load_cert_chain(certs["client_cert"], certs["client_key"])
    return context


def test_tls_and_tokens_answer_as_before_over_a_kept_connection(serve, tls):
    certs, tokens = tls
    registry = _registry()
    server = serve(registry, ssl_context=_server_context(certs), tokens=tokens)
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.server_port, timeout=5, context=_client_context(certs)
    )
    try:
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        response = connection.getresponse()
        assert response.status == 200 and b"demo_requests_total" in response.read()
        first = connection.sock
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        response = connection.getresponse()
        assert response.status == 200 and b"demo_requests_total" in response.read()
        assert connection.sock is first  # kept alive over TLS
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 401
        assert response.getheader("WWW-Authenticate") == 'Bearer realm="metrics"'
        response.read()
    finally:
        connection.close()
    request = urllib.request.Request(
        f"https://127.0.0.1:{server.server_port}/metrics",
        headers={"Authorization": f"Bearer {INFER_TOKEN}"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5, context=_client_context(certs))
    with refused.value as error:
        assert (error.code, error.read()) == (403, b"token 'payments' lacks the 'metrics' scope\n")


def test_tls_handshakes_count_against_the_request_timeout(serve, tls):
    certs, _ = tls
    registry = _registry()
    limits = MetricsLimits(request_timeout=1.0)
    server = serve(registry, ssl_context=_server_context(certs), limits=limits)
    with _connect(server.server_port) as silent:  # connects, never starts the handshake
        assert 0.9 <= _closed_after(silent, timeout=5) < 3.0
    assert _rejected(registry, "timeout") == 1
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        _scrape(server.server_port)  # plain HTTP to the TLS port
    eventually(lambda: _rejected(registry, "handshake") == 1)


def test_the_supervisor_registry_serves_the_connection_counters(serve, tmp_path):
    supervisor = SupervisorMetrics(tmp_path, dict)
    server = serve(supervisor.registry)
    _, body = _scrape(server.server_port)
    text = body.decode()
    assert f'{REJECTED}{{reason="evicted"}} 0.0' in text
    assert "onnxgate_workers_alive 0.0" in text


def test_shutdown_drops_connections_and_ends_the_threads(tmp_path):
    registry = _registry()
    before = set(_server_threads())
    server = start_metrics_server(0, "127.0.0.1", registry)
    port = server.server_port
    assert _scrape(port)[0] == 200
    with _connect(port) as waiting:
        server.shutdown()
        assert _closed_after(waiting, timeout=5) < 1.0
    server.server_close()
    assert set(_server_threads()) <= before
    with pytest.raises(ConnectionRefusedError):
        _connect(port)


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "*/*",
        "text/plain; version=1.0.0",
        "application/openmetrics-text",
        "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    ],
)
@pytest.mark.parametrize("encoding", ["", "gzip"])
@pytest.mark.parametrize("query", ["", "name[]=demo_requests_total"])
def test_expositions_are_make_wsgi_apps(accept, encoding, query):
    registry = _registry()
    head = f"GET /metrics?{query} HTTP/1.1\r\nAccept: {accept}\r\nAccept-Encoding: {encoding}"
    outcome = answer(parse_head(head.encode() + b"\r\n\r\n"), None)
    assert isinstance(outcome, Exposition)
    ours = render(registry, outcome)
    environ: dict[str, Any] = {"QUERY_STRING": query, "HTTP_ACCEPT": accept,
                               "HTTP_ACCEPT_ENCODING": encoding}  # fmt: skip
    setup_testing_defaults(environ)
    started: list[Any] = []
    body = b"".join(make_wsgi_app(registry)(environ, lambda *a: started.append(a)))
    status, headers = started[0][:2]
    assert (ours.status, list(ours.headers)) == (status, headers)
    if encoding:
        ours, body = (
            Response(ours.status, ours.headers, gzip.decompress(ours.body)),
            gzip.decompress(body),
        )
    assert ours.body == body


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("OPTIONS", "/metrics", "200 OK"),
        ("POST", "/metrics", "405 Method Not Allowed"),
        ("HEAD", "/metrics", "405 Method Not Allowed"),
        ("GET", "/favicon.ico", "200 OK"),
    ],
)
def test_other_requests_get_make_wsgi_apps_answers(method, path, status):
    outcome = answer(parse_head(f"{method} {path} HTTP/1.1\r\n\r\n".encode()), None)
    assert isinstance(outcome, Response) and outcome.status == status
