"""The registry's Redis named by one URL: what each form means, the credentials it carries, the
refusal of every malformed URL (saying what is wrong, never quoting a password), and the
redis-py client each form gives, made without connecting to anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import redis.sentinel

from registry_client.connection import clients
from registry_client.connection.clients import is_cluster, redis_client
from registry_client.connection.urls import Endpoint, RedisUrlError, parse_redis_url
from tests.support.redis_server import free_port

SECRET = "Hunter2-secret"
AUTH = f"reader:{SECRET}@"


def server_client(url: str) -> redis.Redis:
    client = redis_client(url)
    assert isinstance(client, redis.Redis)
    return client


def pool_kwargs(url: str) -> dict[str, object]:
    """What every data connection of the client is made with."""
    return dict(server_client(url).connection_pool.connection_kwargs)


def sentinel_pool(url: str) -> redis.sentinel.SentinelConnectionPool:
    pool = server_client(url).connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    return pool


def sentinels_kwargs(pool: redis.sentinel.SentinelConnectionPool) -> list[dict[str, object]]:
    return [dict(s.connection_pool.connection_kwargs) for s in pool.sentinel_manager.sentinels]


def credentials(url: str) -> tuple[object, object]:
    """The (username, password) the data connections authenticate with."""
    location = parse_redis_url(url)
    if location.topology == "server":
        kwargs = pool_kwargs(url)
        return kwargs.get("username"), kwargs.get("password")
    return location.username, location.password


def refusal(url: str) -> str:
    with pytest.raises(RedisUrlError) as err:
        parse_redis_url(url)
    return str(err.value)


def raised_by_parsing(url: str) -> ValueError | None:
    try:
        parse_redis_url(url)
    except ValueError as exc:  # RedisUrlError, or what a failing assert below names instead
        return exc
    return None


def secret_file(tmp_path: Path, content: str | bytes, name: str = "password") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# One server: redis://, rediss://, unix://


def test_a_redis_url_gives_a_client_of_its_host_port_db_and_password():
    kwargs = pool_kwargs(f"redis://{AUTH}registry.internal:6380/2")
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("registry.internal", 6380, 2)
    assert (kwargs["username"], kwargs["password"]) == ("reader", SECRET)
    assert server_client("redis://h").connection_pool.connection_class is redis.Connection


def test_a_redis_url_without_port_or_db_means_port_6379_and_db_0():
    connection = server_client("redis://registry.internal").connection_pool.make_connection()
    assert isinstance(connection, redis.Connection)  # made, not connected
    assert (connection.host, connection.port, connection.db) == ("registry.internal", 6379, 0)


def test_a_rediss_url_makes_tls_connections_with_the_query_files():
    client = server_client("rediss://h:6380?ssl_ca_certs=/tls/ca.pem&ssl_cert_reqs=none")
    assert client.connection_pool.connection_class is redis.SSLConnection
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_cert_reqs"]) == ("/tls/ca.pem", "none")


def test_a_unix_url_makes_socket_connections_to_its_path():
    client = server_client(f"unix://{AUTH}/run/redis/redis.sock?db=3")
    assert client.connection_pool.connection_class is redis.UnixDomainSocketConnection
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["path"], kwargs["db"]) == ("/run/redis/redis.sock", 3)
    assert (kwargs["username"], kwargs["password"]) == ("reader", SECRET)


def test_a_servers_query_options_reach_redis_py_typed():
    kwargs = pool_kwargs(
        "redis://h?socket_keepalive=true&socket_timeout=2.5&health_check_interval=9"
    )
    assert kwargs["socket_keepalive"] is True
    assert kwargs["socket_timeout"] == 2.5  # the URL's, not the default 5 s
    assert kwargs["health_check_interval"] == 9


# Sentinel: redis+sentinel://, rediss+sentinel://


def test_a_sentinel_url_names_its_sentinels_service_and_db():
    location = parse_redis_url("redis+sentinel://s1:26380,s2:26381,[::1]:26379/registry/3")
    assert (location.topology, location.tls) == ("sentinel", False)
    assert location.endpoints == (
        Endpoint("s1", 26380),
        Endpoint("s2", 26381),
        Endpoint("::1", 26379),
    )
    assert (location.service, location.db) == ("registry", 3)


@pytest.mark.parametrize(
    ("url", "endpoints"),
    [
        ("redis+sentinel://s1/registry", (Endpoint("s1", 26379),)),
        ("redis+sentinel://s1,s2:26400/registry", (Endpoint("s1", 26379), Endpoint("s2", 26400))),
        ("redis+sentinel://[::1]/registry", (Endpoint("::1", 26379),)),
    ],
)
def test_a_sentinel_without_a_port_is_on_26379(url, endpoints):
    assert parse_redis_url(url).endpoints == endpoints


def test_a_sentinel_url_without_db_means_db_0_and_rediss_means_tls():
    location = parse_redis_url("rediss+sentinel://s1/registry")
    assert (location.db, location.tls, location.topology) == (0, True, "sentinel")


def test_the_sentinel_client_asks_the_urls_sentinels_for_its_service():
    pool = sentinel_pool("redis+sentinel://s1,s2:26380,[::1]:26381/registry/4")
    assert pool.service_name == "registry"
    assert [(s["host"], s["port"]) for s in sentinels_kwargs(pool)] == [
        ("s1", 26379), ("s2", 26380), ("::1", 26381),
    ]  # fmt: skip
    assert pool.connection_kwargs["db"] == 4


def test_the_sentinels_get_the_sentinel_credentials_and_the_primary_the_data_ones():
    pool = sentinel_pool(
        "redis+sentinel://app:data-pw@s1,s2/registry"
        "?sentinel_username=watcher&sentinel_password=sentinel-pw"
    )
    for sentinel in sentinels_kwargs(pool):
        assert (sentinel["username"], sentinel["password"]) == ("watcher", "sentinel-pw")
    assert (pool.connection_kwargs["username"], pool.connection_kwargs["password"]) == (
        "app", "data-pw",
    )  # fmt: skip


def test_the_sentinel_password_can_come_from_a_file(tmp_path):
    path = secret_file(tmp_path, "sentinel-pw\nnot this line\n")
    pool = sentinel_pool(f"redis+sentinel://s1/registry?sentinel_password_file={path}")
    assert [s["password"] for s in sentinels_kwargs(pool)] == ["sentinel-pw"]
    assert pool.connection_kwargs["password"] is None


def test_rediss_sentinel_speaks_tls_to_the_sentinels_and_to_the_primary():
    pool = sentinel_pool("rediss+sentinel://s1/registry?ssl_ca_certs=/tls/ca.pem")
    assert pool.connection_class is redis.sentinel.SentinelManagedSSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == "/tls/ca.pem"
    for sentinel in pool.sentinel_manager.sentinels:
        assert sentinel.connection_pool.connection_class is redis.SSLConnection
        assert sentinel.connection_pool.connection_kwargs["ssl_ca_certs"] == "/tls/ca.pem"


def test_a_sentinel_urls_query_options_reach_the_primarys_connections_typed():
    pool = sentinel_pool("redis+sentinel://s1/registry?socket_keepalive=true&max_connections=7")
    assert pool.connection_kwargs["socket_keepalive"] is True
    assert pool.max_connections == 7


# Cluster: redis+cluster://, rediss+cluster://


def test_a_cluster_url_names_its_seed_nodes_with_6379_by_default():
    location = parse_redis_url("redis+cluster://n1:7000,n2,[::1]:7002")
    assert (location.topology, location.tls, location.db) == ("cluster", False, 0)
    assert location.endpoints == (Endpoint("n1", 7000), Endpoint("n2", 6379), Endpoint("::1", 7002))


@pytest.mark.parametrize("url", ["rediss+cluster://n1:7000", "rediss+cluster://n1:7000/0"])
def test_a_rediss_cluster_url_is_tls_and_db_0_may_be_named(url):
    location = parse_redis_url(url)
    assert (location.topology, location.tls, location.db) == ("cluster", True, 0)


def test_a_cluster_client_is_a_cluster_and_does_not_connect_when_made():
    client = redis_client(f"redis+cluster://127.0.0.1:{free_port()}")  # nobody listens there
    assert is_cluster(client)
    client.close()


def test_a_cluster_with_no_node_answering_is_a_connection_error_naming_the_seeds():
    first, second = free_port(), free_port()
    client = redis_client(f"redis+cluster://{AUTH}127.0.0.1:{first},127.0.0.1:{second}")
    for _ in range(2):  # and the next use fails alike, not on a half-made client
        with pytest.raises(redis.ConnectionError) as err:
            client.ping()
        assert f"127.0.0.1:{first},127.0.0.1:{second}" in str(err.value)
        assert SECRET not in str(err.value)


def test_a_rediss_cluster_urls_query_options_are_given_to_redis_py_typed():
    # Only the RedisCluster made on first use, which needs a live cluster, holds them; what it
    # is made with is the one way to see them without a server.
    location = parse_redis_url(
        "rediss+cluster://n1:7000?ssl_ca_certs=/tls/ca.pem&socket_keepalive=true"
    )
    assert clients._options(location) == {"ssl_ca_certs": "/tls/ca.pem", "socket_keepalive": True}


def test_servers_and_sentinel_primaries_are_not_clusters():
    assert not is_cluster(redis_client("redis://h"))
    assert not is_cluster(redis_client("redis+sentinel://s1/registry"))


# Credentials

FORMS = ["redis://{auth}h:6379", "rediss://{auth}h", "redis+sentinel://{auth}s1/registry",
         "rediss+sentinel://{auth}s1/registry", "redis+cluster://{auth}n1:7000",
         "rediss+cluster://{auth}n1"]  # fmt: skip


@pytest.mark.parametrize("form", FORMS)
def test_a_password_in_the_url_is_percent_decoded(form):
    url = form.format(auth="reader:p%40ss%3Aw%2Fo%25rd%3F@")
    assert credentials(url) == ("reader", "p@ss:w/o%rd?")


@pytest.mark.parametrize("form", FORMS)
def test_a_username_in_the_url_is_percent_decoded(form):
    found = credentials(form.format(auth="team%40reader:pw@"))
    assert found == ("team@reader", "pw"), (
        f"{form.format(auth='team%40reader:pw@')} authenticates as {found[0]!r};"
        " one server's username is quoted again instead of decoded"
    )


@pytest.mark.parametrize("form", FORMS)
def test_the_password_file_gives_its_first_line(form, tmp_path):
    path = secret_file(tmp_path, "p@ss:w/rd %20?#\nnot this line\n")
    url = form.format(auth="reader@") + f"?password_file={path}"
    assert credentials(url) == ("reader", "p@ss:w/rd %20?#")


def test_the_password_file_option_is_not_passed_on_to_redis_py(tmp_path):
    path = secret_file(tmp_path, SECRET)
    assert "password_file" not in pool_kwargs(f"redis://h?password_file={path}")
    location = parse_redis_url(
        f"redis+sentinel://s1/registry?password_file={path}&sentinel_password=x&socket_keepalive=1"
    )
    assert location.options == (("socket_keepalive", "1"),)


@pytest.mark.parametrize("option", ["password_file", "sentinel_password_file"])
@pytest.mark.parametrize("content", ["", "\n", "\nthe password on line two\n"])
def test_a_password_file_without_a_first_line_is_refused(option, content, tmp_path):
    path = secret_file(tmp_path, content)
    message = refusal(f"redis+sentinel://s1/registry?{option}={path}")
    assert message.startswith(f"{option}: ")
    assert "empty" in message and "first line" in message


@pytest.mark.parametrize("option", ["password_file", "sentinel_password_file"])
@pytest.mark.parametrize("unreadable", ["missing", "directory", "latin-1"])
def test_an_unreadable_password_file_is_refused_naming_the_option(option, unreadable, tmp_path):
    path = {
        "missing": tmp_path / "absent",
        "directory": tmp_path,
        "latin-1": secret_file(tmp_path, "pässword".encode("latin-1")),
    }[unreadable]
    message = refusal(f"redis+sentinel://s1/registry?{option}={path}")
    assert message.startswith(f"{option}: cannot read {str(path)!r}")


@pytest.mark.parametrize("form", FORMS)
def test_a_password_both_in_the_url_and_in_a_file_is_refused(form, tmp_path):
    path = secret_file(tmp_path, "other")
    message = refusal(form.format(auth=AUTH) + f"?password_file={path}")
    assert "password_file" in message and "not both" in message
    assert SECRET not in message


def test_a_sentinel_password_both_given_and_in_a_file_is_refused(tmp_path):
    path = secret_file(tmp_path, "other")
    message = refusal(
        f"redis+sentinel://s1/registry?sentinel_password={SECRET}&sentinel_password_file={path}"
    )
    assert "sentinel_password_file" in message and "not both" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "option", ["sentinel_username", "sentinel_password", "sentinel_password_file"]
)
@pytest.mark.parametrize("url", ["redis://h", "rediss://h", "unix:///run/redis.sock",
                                 "redis+cluster://n1", "rediss+cluster://n1"])  # fmt: skip
def test_sentinel_options_on_a_url_without_sentinels_are_refused(option, url):
    message = refusal(f"{url}?{option}=x")
    assert message == f"{option}: only a redis+sentinel:// URL has sentinels"


# Malformed URLs: (URL with {auth} where credentials go, what the message says, and the part
# of the URL it quotes when the URL has no credentials: with them, it quotes nothing)

MALFORMED = [
    ("http://{auth}h:6379", "expected one of redis://", ""),
    ("redis-sentinel://{auth}s1/registry", "got 'redis-sentinel'", ""),
    ("redis+sentinel://{auth}/registry", "redis+sentinel:// needs at least one host:port", ""),
    ("rediss+cluster://{auth}", "rediss+cluster:// needs at least one host:port", ""),
    ("redis+cluster://{auth}n1,,n2", "expected host:port, got", "''"),
    ("redis+sentinel://{auth}s1:0/registry", "must be a number from 1 to 65535", "'s1:0'"),
    ("redis+sentinel://{auth}s1:65536/registry", "must be a number from 1", "'s1:65536'"),
    ("redis+sentinel://{auth}s1:26379,s2:abc/registry", "must be a number", "'s2:abc'"),
    ("rediss+cluster://{auth}n1:", "must be a number from 1 to 65535", "'n1:'"),
    ("redis+cluster://{auth}[::1]:-1", "must be a number", "'[::1]:-1'"),
    ("redis+sentinel://{auth}s1", "name the primary the sentinels watch", ""),
    ("rediss+sentinel://{auth}s1/", "name the primary the sentinels watch", ""),
    ("redis+sentinel://{auth}s1/registry/one", "(a number) after the hosts", "'registry/one'"),
    ("redis+sentinel://{auth}s1/registry/-1", "(a number) after the hosts", "'registry/-1'"),
    ("redis+sentinel://{auth}s1/registry/1/2", "(a number) after the hosts", "'registry/1/2'"),
    ("redis+cluster://{auth}n1/1", "a Redis Cluster has only db 0; drop the path", ""),
    ("rediss+cluster://{auth}n1/registry", "a Redis Cluster has only db 0; drop the path", ""),
    ("redis://{auth}h:0", "must be a number from 1 to 65535", "'h:0'"),
    ("redis://{auth}h:6379/registry", "expected /db (a number)", "'registry'"),
    ("redis://{auth}h1:6379,h2:6379", "names one server", ""),
]  # fmt: skip


@pytest.mark.parametrize(("form", "expected", "quoted"), MALFORMED)
def test_a_malformed_url_is_refused_saying_what_is_wrong(form, expected, quoted):
    message = refusal(form.format(auth=""))
    assert expected in message and quoted in message


@pytest.mark.parametrize(("form", "expected", "quoted"), MALFORMED)
def test_a_malformed_urls_refusal_never_quotes_its_password(form, expected, quoted):
    message = refusal(form.format(auth=AUTH))
    assert expected in message
    assert SECRET not in message and (not quoted or quoted not in message)


# Mistyped URLs with a password: what the refusal quotes is never the password.
@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("redis:/:pw42@h:6379", "pw42"),  # one slash short of a scheme
        ("redis//reader:pw42@h:6379", "pw42"),  # the colon forgotten
        ("redis+sentinel://:s3cr?et@s1/registry", "s3cr"),  # a ? in the password not encoded
    ],
)
def test_a_mistyped_url_is_refused_without_quoting_its_password(url, secret):
    message = refusal(url)
    assert secret not in message, f"the refusal of {url!r} quotes the password: {message}"


@pytest.mark.parametrize("url", ["redis+sentinel://s1:²/registry", "redis+cluster://n1:٣",
                                 "redis+sentinel://s1/registry/²"])  # fmt: skip
def test_a_port_or_db_of_non_ascii_digits_is_refused(url):
    error = raised_by_parsing(url)
    assert isinstance(error, RedisUrlError), (
        f"{url!r} {'is accepted' if error is None else f'raises {error!r}'}:"
        " str.isdigit() is true of digits that are not 0-9"
    )


@pytest.mark.parametrize(
    "url",
    ["redis://h:0", "redis://h:65536", f"rediss://{AUTH}h:abc", "redis://h:6379/registry",
     "redis+sentinel://s1/registry?socket_timeout=soon"],
)  # fmt: skip
def test_a_url_is_checked_whole_before_any_client_is_made(url):
    # The gateway's settings check parses the URL; what passes it must give a client.
    error = raised_by_parsing(url)
    if error is None:
        try:
            kwargs = server_client(url).connection_pool.connection_kwargs
            then = f"gives a client of {[(k, kwargs.get(k)) for k in ('host', 'port', 'db')]}"
        except ValueError as exc:  # the failing assert names what happens instead
            then = f"then makes redis_client raise {exc!r}"
        error_text = f"parse_redis_url accepts it and {then}"
    else:
        error_text = repr(error)
    assert isinstance(error, RedisUrlError), f"{url!r}: {error_text}"


def test_an_upper_case_scheme_gives_a_client():
    parse_redis_url("REDIS://h:6380")  # schemes are case-insensitive, and the parser agrees
    try:
        client = server_client("REDIS://h:6380")
    except ValueError as exc:
        pytest.fail(f"'REDIS://h:6380' parses but redis_client raises {exc!r}")
    assert client.connection_pool.connection_kwargs["port"] == 6380


@pytest.mark.parametrize("option", ["socket_timeout", "socket_connect_timeout"])
def test_a_sentinel_url_may_set_the_timeouts(option):
    url = f"redis+sentinel://s1/registry?{option}=1.5"
    try:
        kwargs = sentinel_pool(url).connection_kwargs
    except TypeError as exc:
        pytest.fail(f"{url!r}: redis_client raises {exc!r}")
    assert kwargs[option] == 1.5


def test_a_cluster_url_may_set_the_timeouts():
    url = f"redis+cluster://127.0.0.1:{free_port()}?socket_timeout=1.5"
    client = redis_client(url)
    try:
        client.ping()
    except redis.ConnectionError:
        pass  # what a cluster nobody answers for gives
    except TypeError as exc:
        pytest.fail(f"{url!r}: its first use raises {exc!r}")


# What is shown of a location


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://{AUTH}h:6380/2?socket_keepalive=true", "redis://h:6380/2"),
        (f"unix://{AUTH}/run/redis.sock", "unix:///run/redis.sock"),
        (f"rediss+sentinel://{AUTH}s1,s2:26380/registry/3?sentinel_username=watcher"
         f"&sentinel_password={SECRET}",
         "Sentinel service 'registry' (sentinels s1:26379,s2:26380, db 3)"),
        (f"redis+cluster://{AUTH}n1,n2:7001", "Redis Cluster (seed nodes n1:6379,n2:7001)"),
    ],
)  # fmt: skip
def test_describe_says_where_it_is_and_never_shows_credentials(url, shown):
    location = parse_redis_url(url)
    assert location.describe() == shown
    assert SECRET not in repr(location)


@pytest.mark.parametrize("form", FORMS)
def test_a_password_from_a_file_is_never_shown(form, tmp_path):
    path = secret_file(tmp_path, SECRET)
    location = parse_redis_url(form.format(auth="reader@") + f"?password_file={path}")
    assert SECRET not in location.describe()
    assert "reader" not in location.describe()
    assert SECRET not in repr(location)
