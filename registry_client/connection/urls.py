"""The registry's Redis named by one URL: a server, a Sentinel-watched primary or a Redis
Cluster, with the password in the URL or in a file. Parsed and checked whole before anything
connects, so a bad URL is a usage error naming what is wrong; no message echoes a password."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode

import redis.connection

__all__ = ["FORMS", "Endpoint", "RedisLocation", "RedisUrlError", "parse_redis_url"]

Topology = Literal["server", "sentinel", "cluster"]

FORMS = (
    "redis://[user:password@]host[:port][/db], rediss://... (TLS), unix:///path/redis.sock,"
    " redis+sentinel://[user:password@]host:port[,host:port...]/SERVICE[/db],"
    " redis+cluster://[user:password@]host:port[,host:port...]"
    " (rediss+sentinel, rediss+cluster: TLS)"
)
_SCHEMES: dict[str, tuple[Topology, bool]] = {
    "redis": ("server", False), "rediss": ("server", True), "unix": ("server", False),
    "redis+sentinel": ("sentinel", False), "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False), "rediss+cluster": ("cluster", True),
}  # fmt: skip
_DEFAULT_PORTS: dict[Topology, int] = {"server": 6379, "sentinel": 26379, "cluster": 6379}
# Ours, taken out before the rest of the query reaches redis-py.
_PASSWORD_FILE = "password_file"
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password", "sentinel_password_file")
_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also takes other scripts' digits
_SCHEME_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,19}")
_HOST_PORT = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>.*))?")


class RedisUrlError(ValueError):
    """A URL that names no Redis this client can reach; the message says what is wrong and
    never quotes a password."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class RedisLocation:
    """Where the registry's Redis is and how to reach it.

    For a server, `server_url` is the URL redis-py parses itself (the password file's
    content put in). For Sentinel, `endpoints` are the sentinels, `service` the primary they
    watch; for a Cluster, `endpoints` are the nodes to start from. `options` is the URL's
    query (TLS files, timeouts) that every data connection gets, as redis-py spells it."""

    topology: Topology
    tls: bool
    endpoints: tuple[Endpoint, ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, str], ...] = ()
    server_url: str = field(default="", repr=False)

    def describe(self) -> str:
        """Where it is, without credentials: for logs and messages."""
        if self.topology == "server":
            return _without_credentials(self.server_url)
        hosts = ",".join(f"{e.host}:{e.port}" for e in self.endpoints)
        if self.topology == "sentinel":
            return f"Sentinel service {self.service!r} (sentinels {hosts}, db {self.db})"
        return f"Redis Cluster (seed nodes {hosts})"


def parse_redis_url(url: str) -> RedisLocation:
    """The location a URL names, or RedisUrlError saying what is wrong with it."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in _SCHEMES:
        given = repr(scheme) if separator and _SCHEME_TEXT.fullmatch(scheme) else "no scheme"
        raise RedisUrlError(f"expected one of {FORMS}; got {given}")
    scheme = scheme.lower()
    topology, tls = _SCHEMES[scheme]
    # Pieces of a URL with credentials are never quoted back: a password with a character
    # it should have percent-encoded ('?', '/', ',') ends up in them.
    secret = "@" in rest

    def shown(text: str) -> str:
        return "(not shown: the URL has a password)" if secret else repr(text[:60])

    rest, _, query_text = rest.partition("?")
    query = dict(parse_qsl(query_text, keep_blank_values=True))
    password_file = query.pop(_PASSWORD_FILE, None)
    sentinel = {name: query.pop(name) for name in _SENTINEL_OPTIONS if name in query}
    if sentinel and topology != "sentinel":
        raise RedisUrlError(f"{', '.join(sentinel)}: only a redis+sentinel:// URL has sentinels")
    _check_options(query)
    userinfo, at, address = rest.rpartition("@")
    if not at:
        userinfo, address = "", rest
    username, _, password_text = userinfo.partition(":")
    from_file = None
    if password_file is not None:
        if password_text:
            raise RedisUrlError("give the password in the URL or in password_file, not both")
        from_file = _read_secret(password_file, _PASSWORD_FILE)
    if topology == "server":
        return _server(scheme, userinfo, from_file, address, query, tls, shown)
    password = unquote(password_text) if password_text else from_file
    hosts, _, path = address.partition("/")
    endpoints = _endpoints(hosts, _DEFAULT_PORTS[topology], scheme, shown)
    service, db = _service_and_db(path, topology, scheme, shown)
    sentinel_password = sentinel.get("sentinel_password") or None
    if "sentinel_password_file" in sentinel:
        if sentinel_password is not None:
            raise RedisUrlError("give sentinel_password or sentinel_password_file, not both")
        sentinel_password = _read_secret(sentinel["sentinel_password_file"],
                                         "sentinel_password_file")  # fmt: skip
    return RedisLocation(
        topology, tls, endpoints, service, db, unquote(username) or None, password,
        sentinel.get("sentinel_username") or None, sentinel_password, tuple(query.items()),
    )  # fmt: skip


def _check_options(query: dict[str, str]) -> None:
    """The query's values as redis-py's own URL parser types them: refused now, not when a
    client is made from them."""
    try:
        redis.connection.parse_url(  # type: ignore[no-untyped-call]
            "redis://localhost/?" + urlencode(query)
        )
    except ValueError as exc:
        raise RedisUrlError(f"the URL's query: {exc}") from None


def _server(
    scheme: str, userinfo: str, password_from_file: str | None, address: str,
    query: dict[str, str], tls: bool, shown: Callable[[str], str],
) -> RedisLocation:  # fmt: skip
    """One server: checked here, then parsed by redis-py (with the password read from its
    file put in)."""
    if scheme == "unix":
        if not address.startswith("/"):
            raise RedisUrlError("unix://: expected unix:///path/to/redis.sock")
    else:
        host, _, path = address.partition("/")
        if "," in host:
            raise RedisUrlError(f"{scheme}:// names one server: for several hosts use"
                                f" {scheme}+sentinel:// or {scheme}+cluster://")  # fmt: skip
        _endpoints(host, _DEFAULT_PORTS["server"], scheme, shown)
        if path and not _DIGITS.fullmatch(path):
            raise RedisUrlError(f"{scheme}://: expected /db (a number) after the host, got"
                                f" /{shown(path)}")  # fmt: skip
    if password_from_file is not None:
        userinfo = userinfo.partition(":")[0] + ":" + quote(password_from_file, safe="")
    credentials = userinfo + "@" if userinfo else ""
    server_url = f"{scheme}://{credentials}{address}"
    if query:
        server_url += "?" + urlencode(query)
    return RedisLocation("server", tls, server_url=server_url)


def _endpoints(
    hosts: str, default_port: int, scheme: str, shown: Callable[[str], str]
) -> tuple[Endpoint, ...]:
    if not hosts:
        raise RedisUrlError(f"{scheme}:// needs at least one host:port")
    endpoints = []
    for piece in hosts.split(","):
        match = _HOST_PORT.fullmatch(piece)
        if match is None or not (match["ipv6"] or match["host"]):
            raise RedisUrlError(f"{scheme}://: expected host:port, got {shown(piece)}")
        port_text = match["port"]
        if port_text is None:
            port = default_port
        elif _DIGITS.fullmatch(port_text) and 1 <= int(port_text) <= 65535:
            port = int(port_text)
        else:
            raise RedisUrlError(f"{scheme}://: the port of {shown(piece)} must be a number from"
                                " 1 to 65535")  # fmt: skip
        endpoints.append(Endpoint(match["ipv6"] or unquote(match["host"]), port))
    return tuple(endpoints)


def _service_and_db(
    path: str, topology: Topology, scheme: str, shown: Callable[[str], str]
) -> tuple[str, int]:
    parts = [unquote(p) for p in path.split("/")] if path else []
    if topology == "cluster":
        if parts and parts != ["0"]:
            raise RedisUrlError(f"{scheme}://: a Redis Cluster has only db 0; drop the path")
        return "", 0
    if not parts or not parts[0]:
        raise RedisUrlError(
            f"{scheme}://: name the primary the sentinels watch: {scheme}://host:port/SERVICE"
        )
    if len(parts) > 2 or (len(parts) == 2 and not _DIGITS.fullmatch(parts[1])):
        raise RedisUrlError(f"{scheme}://: expected /SERVICE or /SERVICE/db (a number) after"
                            f" the hosts, got /{shown(path)}")  # fmt: skip
    return parts[0], int(parts[1]) if len(parts) == 2 else 0


def _read_secret(path: str, option: str) -> str:
    """A password kept in a file (a mounted Kubernetes secret): its first line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RedisUrlError(f"{option}: cannot read {path!r}: {exc.__class__.__name__}") from None
    secret = text.splitlines()[0] if text else ""
    if not secret:
        raise RedisUrlError(f"{option}: {path!r} is empty; expected the password on its first line")
    return secret


def _without_credentials(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    address = rest.rpartition("@")[2]
    return f"{scheme}{separator}{address.partition('?')[0]}"
