"""Registry pool integrity: registry calls cut off by 2-10 ms deadlines never hand their reply
to another caller, and every connection goes back to the pool.

The concern is redis-py's incident class (CVE-2023-28858/28859): a command cut off by a timeout
leaves its reply unread on a connection that goes back to the pool, and the next caller reads
someone else's reply. redis-py 8 speaks RESP3 by default, and with maintenance notifications on
("auto") its pool skips the check that threw away a connection with unread data ("Connection has
data"): only the disconnect on a cut-off read or write stands between a timeout and a crossed
reply.

The setup is a gateway's own RegistryClient (`RegistryClient.from_url`, as app.py makes it):
its pool serves the gateway's watcher, hint listener, heartbeats and flushers, ten thousand
registry calls from several threads with 2-10 ms deadlines, and a verifier that writes unique
keys and reads them back. Between the pool and redis-server a proxy (a process of its own)
holds 3% of the chunks for 0-15 ms, either way; with a loaded machine's scheduling that cuts off
about one call in three, mid-reply, and the replies arrive on connections their callers gave
up. Timeouts are expected and counted; any other error, a wrong answer, a connection not given
back to the pool or a connection redis-server holds that the pool did not make fails the test.

What a deadline is here: redis-py has no per-call timeout; a connection has one socket timeout
for every read and write, the pool's (5 s). So the pool's connections are redis-py's own TCP
connection with one change (`_deadline_connection`): a thread that has set a deadline has its
socket reads and writes time out after it, each attempt; every other thread (the gateway's, the
verifier) keeps the pool's 5 s. Retries, reconnects and releases stay redis-py's.
"""

from __future__ import annotations

import gc
import logging
import random
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from gateway.process.shutdown import ShutdownBudget
from gateway.settings import Settings
from registry_client.client import RegistryClient
from registry_client.errors import NotFound, Unreachable
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.fault_proxy import FaultProxy
from tests.support.gateways import REPO_ROOT, eventually, wait_until_ready
from tests.support.wire import infer_request

REQUESTS = 10_000
CALLERS = 32  # most of a cut-off call is redis-py's retry backoff (0.1 s and up): asleep
VERIFIERS = 2
MODELS = 4
DEADLINE_S = (0.002, 0.010)
JITTER_SHARE = 0.03  # of the chunks the proxy forwards, either way
JITTER_MAX_S = 0.015
SEED = 20261127
ACTOR = "pool-test"
REPLICA_PREFIX = "pool-test-"


class _Deadline(threading.local):
    """The calling thread's socket timeout for registry calls; None: the pool's own."""

    seconds: float | None = None


_DEADLINE = _Deadline()


def _deadline_connection(cut_offs: Callable[[], None]) -> type[redis.Connection]:
    """redis-py's TCP connection whose socket reads and writes, in a thread with a deadline,
    time out after it; `cut_offs` is called for every read or write a deadline cut off."""

    class DeadlineConnection(redis.Connection):
        def _use_deadline(self) -> None:
            if self._sock is not None:  # a reconnect's handshake gets the deadline too
                self._sock.settimeout(_DEADLINE.seconds or self.socket_timeout)

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            self._use_deadline()
            try:
                super().send_packed_command(command, check_health)
            except redis.TimeoutError:
                if _DEADLINE.seconds is not None:
                    cut_offs()
                raise

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            self._use_deadline()
            try:
                return super().read_response(*args, **kwargs)
            except redis.TimeoutError:
                if _DEADLINE.seconds is not None:
                    cut_offs()
                raise

    return DeadlineConnection


class JitterProxy(FaultProxy):
    """The chaos tests' proxy, holding a share of the chunks it forwards (either way) for a
    random 0 to max_s seconds; a connection's chunks stay in order."""

    def __init__(self, target_port: int, share: float, max_s: float, seed: int) -> None:
        super().__init__("127.0.0.1", target_port)
        self._rng = random.Random(seed)
        self._share = share
        self._max_s = max_s

    def _delay(self) -> float:
        return self._rng.uniform(0, self._max_s) if self._rng.random() < self._share else 0.0


def serve_proxy(target_port: int) -> None:
    """Run a JitterProxy until stdin closes, its port on stdout: run in a process of its own,
    it forwards on time whatever the test's threads do with this process's GIL."""
    proxy = JitterProxy(target_port, JITTER_SHARE, JITTER_MAX_S, SEED).start()
    print(proxy.port, flush=True)
    sys.stdin.read()
    proxy.stop()


@dataclass(frozen=True)
class Model:
    """A registered model and what the registry must answer about it."""

    name: str
    description: str
    versions: tuple[str, str]
    sha256: dict[str, str]
    artifacts: dict[str, Path]


class CrossedReply(AssertionError):
    """A call answered with something that is not its own answer."""


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise CrossedReply(what)


@dataclass
class Tally:
    """Outcomes of every call, counted by the threads that made them."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: bool = False
    issued: int = 0
    ok: int = 0
    timed_out: int = 0
    cut_offs: int = 0
    verified: int = 0
    crossed: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    unwrapped_timeouts: Counter[str] = field(default_factory=Counter)
    by_op: Counter[str] = field(default_factory=Counter)

    def claim(self) -> bool:
        with self.lock:
            if self.stopped or self.issued >= REQUESTS:
                return False
            self.issued += 1
            return True

    def cut_off(self) -> None:
        with self.lock:
            self.cut_offs += 1

    def add(self, op: str, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.by_op[f"{op}:{outcome}"] += 1
            if outcome == "ok":
                self.ok += 1
            elif outcome == "timed_out":
                self.timed_out += 1
            elif outcome == "crossed":
                self.crossed.append(f"{op}: {detail}")
            else:
                self.errors[f"{op}: {detail}"[:200]] += 1


class Caller:
    """One thread's registry calls; each op checks that the answer is its own."""

    def __init__(self, client: RegistryClient, models: list[Model], index: int) -> None:
        self.client = client
        self.models = models
        self.rng = random.Random(SEED + index)
        self.replica = f"{REPLICA_PREFIX}{index % 4}"  # threads share heartbeats: fewer keys
        self.last_epoch = 0
        self.calls = 0

    def model(self) -> Model:
        return self.rng.choice(self.models)

    def get_route(self) -> None:
        m = self.model()
        rule = self.client.get_route(m.name)
        if rule is None or rule.model != m.name or set(rule.versions) != set(m.versions):
            raise CrossedReply(f"get_route({m.name}) -> {rule}")

    def show_version(self) -> None:
        m = self.model()
        version = self.rng.choice(m.versions)
        fields = self.client.show_version(m.name, version)
        _expect(fields.get("sha256") == m.sha256[version],
                f"show_version({m.name}, {version}) -> {fields}")  # fmt: skip

    def list_versions(self) -> None:
        m = self.model()
        versions = self.client.list_versions(m.name)
        _expect(versions == list(m.versions), f"list_versions({m.name}) -> {versions}")

    def show_model(self) -> None:
        m = self.model()
        info = self.client.show_model(m.name)
        _expect(info.get("description") == m.description and info.get("versions") ==
                list(m.versions), f"show_model({m.name}) -> {info}")  # fmt: skip

    def rules(self) -> None:
        valid, invalid = self.client.rules()
        _expect(not invalid and set(valid) == {m.name for m in self.models}
                and all(rule.model == name for name, rule in valid.items()),
                f"rules() -> {valid}, {invalid}")  # fmt: skip

    def epoch(self) -> None:
        epoch = self.client.epoch()
        _expect(epoch >= self.last_epoch, f"epoch() -> {epoch} after {self.last_epoch}")
        self.last_epoch = epoch

    def heartbeat(self) -> None:
        self.calls += 1
        fields = {"replica": self.replica, "call": str(self.calls)}
        self.client.heartbeat(self.replica, fields, ttl_seconds=60)

    def gateways(self) -> None:
        for replica, fields in self.client.gateways().items():
            if replica.startswith(REPLICA_PREFIX):
                _expect(fields.get("replica") == replica, f"gateways()[{replica}] -> {fields}")

    def set_route(self) -> None:
        m = self.model()
        weight = self.rng.randint(0, 100)
        split = [Split(m.versions[0], weight), Split(m.versions[1], 100 - weight)]
        reason = uuid.uuid4().hex
        rule = self.client.set_route(m.name, split, actor=ACTOR, reason=reason)
        _expect(rule.model == m.name and list(rule.split) == split and rule.reason == reason,
                f"set_route({m.name}) -> {rule}")  # fmt: skip

    def register_again(self) -> None:
        """The same bytes again: the stored fields come back, and the transaction ends still
        WATCHing (the pipeline's reset() sends UNWATCH)."""
        m = self.model()
        version = self.rng.choice(m.versions)
        fields = self.client.register_version(m.name, version, m.artifacts[version], actor=ACTOR)
        _expect(fields.get("sha256") == m.sha256[version],
                f"register_version({m.name}, {version}) -> {fields}")  # fmt: skip

    def status_of_missing_version(self) -> None:
        """NotFound is the answer, raised while WATCHing (the pipeline's reset() sends
        UNWATCH)."""
        m = self.model()
        try:
            self.client.retire_version(m.name, "999", actor=ACTOR)
        except NotFound:
            return
        raise CrossedReply(f"retire_version({m.name}, 999) did not raise NotFound")


OPS: dict[str, tuple[int, Callable[[Caller], None]]] = {
    "get_route": (12, Caller.get_route),
    "show_version": (12, Caller.show_version),
    "list_versions": (12, Caller.list_versions),
    "show_model": (10, Caller.show_model),
    "rules": (10, Caller.rules),
    "epoch": (8, Caller.epoch),
    "heartbeat": (10, Caller.heartbeat),
    "gateways": (4, Caller.gateways),
    "set_route": (10, Caller.set_route),
    "register_again": (3, Caller.register_again),
    "status_of_missing_version": (5, Caller.status_of_missing_version),
}


def _outcome(exc: Exception) -> str:
    """timed_out when a deadline ended the call: a redis-py TimeoutError behind it (through the
    client's Unreachable, or a WatchError redis-py raises for a connection lost while
    WATCHing) and no ConnectionError ("Too many connections" is one); else error."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    timed_out = any(isinstance(e, redis.TimeoutError) for e in chain)
    broken = any(isinstance(e, redis.ConnectionError) for e in chain)
    return "timed_out" if timed_out and not broken else "error"


def _call_until_done(caller: Caller, tally: Tally) -> None:
    names = list(OPS)
    weights = [OPS[name][0] for name in names]
    while tally.claim():
        name = caller.rng.choices(names, weights)[0]
        _DEADLINE.seconds = caller.rng.uniform(*DEADLINE_S)
        try:
            OPS[name][1](caller)
        except CrossedReply as exc:
            tally.add(name, "crossed", str(exc))
        # Anything else a crossed or broken reply can raise (wrong types, protocol errors,
        # schema errors) is counted here rather than lost in a thread.
        except Exception as exc:
            outcome = _outcome(exc)
            if outcome == "timed_out" and not isinstance(exc, Unreachable):
                tally.unwrapped_timeouts[f"{name}: {type(exc).__name__}"] += 1
            tally.add(name, outcome, f"{type(exc).__name__}: {exc}")
        else:
            tally.add(name, "ok")
        finally:
            _DEADLINE.seconds = None


def _verify_until(pool: redis.ConnectionPool, index: int, stop: threading.Event,
                  tally: Tally) -> None:  # fmt: skip
    """SET unique keys and read them back on the same pool, without a deadline."""
    client = redis.Redis(connection_pool=pool)
    written: list[tuple[str, bytes]] = []
    while not stop.wait(0.002):  # enough checks, without starving the callers of CPU
        key = f"pool-test:verify:{index}:{len(written)}"
        value = uuid.uuid4().hex.encode()
        try:
            stored = client.set(key, value)
            read = client.get(key)
            written.append((key, value))
            recent = written[-5:]
            with client.pipeline(transaction=False) as pipe:
                for k, _ in recent:
                    pipe.get(k)
                batch = pipe.execute()
        except redis.RedisError as exc:
            tally.add("verifier", "error", f"{type(exc).__name__}: {exc}")
            continue
        if stored is not True or read != value or batch != [v for _, v in recent]:
            tally.add("verifier", "crossed", f"{key}: set {stored!r}, get {read!r}, not {value!r}")
        with tally.lock:
            tally.verified += 1


def _infer_until(port: int, model: str, stop: threading.Event, codes: Counter[str]) -> None:
    """A little traffic, so the gateway's statistics and sketch flushers have work."""
    request = infer_request(model, {"input": np.ones((1, 4), np.float32)})
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while not stop.wait(0.01):
            try:
                stub.ModelInfer(request, timeout=5)
                codes["OK"] += 1
            except grpc.RpcError as exc:
                codes[exc.code().name] += 1


def _register(client: RegistryClient, tmp_path: Path) -> list[Model]:
    models = []
    for k in range(MODELS):
        name = f"pool{k}"
        description = f"pool test model {k} {uuid.uuid4().hex}"
        versions = (str(10 * k + 1), str(10 * k + 2))
        client.create_model(name, actor=ACTOR, description=description)
        sha256, artifacts = {}, {}
        for version in versions:
            model = onnx_models.classifier(seed=int(version))
            artifacts[version] = onnx_models.save(model, tmp_path, name, version)
            fields = client.register_version(name, version, artifacts[version], actor=ACTOR)
            sha256[version] = fields["sha256"]
        client.set_route(name, [Split(versions[0], 50), Split(versions[1], 50)], actor=ACTOR)
        models.append(Model(name, description, versions, sha256, artifacts))
    return models


def _proxied_clients(admin: redis.Redis) -> int:
    """Connections redis-server has, other than the admin's own (all the others come through
    the proxy, from the gateway's pool)."""
    own = admin.client_id()
    return sum(1 for entry in admin.client_list() if int(entry["id"]) != own)


@pytest.fixture
def jitter_proxy(redis_server) -> Iterator[str]:
    """The URL of a JitterProxy in front of redis_server, run in a process of its own."""
    command = [sys.executable, "-c",
               "from tests.system.test_redis_pool_integrity import serve_proxy;"
               f" serve_proxy({redis_server.port})"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        yield f"redis://127.0.0.1:{int(process.stdout.readline())}/0"
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()


def _start(threads: list[threading.Thread]) -> list[threading.Thread]:
    for thread in threads:
        thread.start()
    return threads


@pytest.mark.timeout(180)  # ~40 s; 76 s seen with both cores of the machine busy elsewhere
def test_cut_off_registry_calls_never_cross_replies_or_leak_connections(
    redis_server, jitter_proxy: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING)
    admin_client = RegistryClient.from_url(redis_server.url)
    models = _register(admin_client, tmp_path)
    admin_client.close()
    settings = Settings(
        host="127.0.0.1", grpc_port=0, metrics_port=0, log_format="text",
        redis_url=jitter_proxy, rules_poll_seconds=0.1, heartbeat_seconds=0.25,
        stats_flush_seconds=0.25, drift_flush_seconds=0.25,
    )  # fmt: skip
    gateway = Gateway(settings, CollectorRegistry())
    client = gateway.registry_client
    assert client is not None and gateway.watcher is not None
    assert isinstance(client._redis, redis.Redis)  # one server's client
    pool = client._redis.connection_pool  # the pool every user of this client shares
    tally = Tally()
    assert not pool._created_connections, "a connection was made before the class was set"
    pool.connection_class = _deadline_connection(tally.cut_off)
    gateway.start()
    admin = redis.Redis.from_url(redis_server.url)
    stop = threading.Event()
    codes: Counter[str] = Counter()
    try:
        assert gateway.loaded.wait(30), "the gateway did not follow the registry"
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            wait_until_ready(pb_grpc.GRPCInferenceServiceStub(channel))
        others = _start(
            [threading.Thread(target=_infer_until, daemon=True,
                              args=(gateway.grpc_port, models[0].name, stop, codes))]
            + [threading.Thread(target=_verify_until, args=(pool, i, stop, tally), daemon=True)
               for i in range(VERIFIERS)]
        )  # fmt: skip
        callers = _start([
            threading.Thread(target=_call_until_done, args=(Caller(client, models, i), tally),
                             daemon=True)
            for i in range(CALLERS)
        ])  # fmt: skip
        for thread in callers:
            thread.join(timeout=60)
        stop.set()
        for thread in others:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in [*others, *callers]), "a thread hung"

        # Everything that uses the pool stops; the pool itself stays open to be looked at.
        # The rollout controller and the quality tasks too: their ticks (the label join's
        # every second) take a connection, and would reconnect one the pool holds
        # disconnected after the count below was taken.
        assert gateway.stats_flusher is not None and gateway.rollouts is not None
        for task in [gateway.stats_flusher, *gateway.drift_tasks, gateway.rollouts,
                     gateway.watcher]:  # fmt: skip
            task.stop()
        gateway.quality.stop(ShutdownBudget(30.0))
        in_use_before_gc = len(pool._in_use_connections)
        gc.collect()  # a pipeline's __del__ may give back what its reset() did not
        in_use = len(pool._in_use_connections)
        created = pool._created_connections
        connected = sum(1 for c in pool._available_connections if c._sock is not None)
        eventually(lambda: _proxied_clients(admin) == connected, timeout=10)
        redis_clients = _proxied_clients(admin)
    finally:
        tally.stopped = True
        stop.set()
        gateway.stop(grace_seconds=1)
    eventually(lambda: _proxied_clients(admin) == 0, timeout=10)
    admin.close()

    print(
        f"POOL requests={tally.issued} timed_out={tally.timed_out} crossed={len(tally.crossed)}"
        f" errors={sum(tally.errors.values())} in_use_end={in_use}"
        f" in_use_before_gc={in_use_before_gc} cut_offs={tally.cut_offs}"
        f" verifier_checks={tally.verified} pool_created={created}"
        f" redis_clients_end={redis_clients} infer={dict(codes)}"
    )
    print(f"POOL by op: {dict(sorted(tally.by_op.items()))}")
    if tally.unwrapped_timeouts:
        print(f"POOL timeouts not wrapped as Unreachable: {dict(tally.unwrapped_timeouts)}")
    gateway_warnings = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith(("gateway", "registry_client")) and r.levelno >= logging.WARNING
    ]
    assert tally.issued == REQUESTS
    assert tally.crossed == [], tally.crossed[:10]
    # A connection never given back stays out of the pool for good, and redis-py 8's pool
    # makes 100: then every user of it, the gateway's own threads too, gets "Too many
    # connections".
    assert (in_use_before_gc, in_use) == (0, 0), "connections never given back to the pool"
    assert not tally.errors, tally.errors.most_common(10)
    assert gateway_warnings == [], gateway_warnings[:10]
    assert redis_clients <= created
    assert tally.timed_out > 0 and tally.cut_offs > 0, "no call was cut off: the test tests nothing"
    assert tally.verified > 0
    assert codes["OK"] > 0 and set(codes) == {"OK"}, codes
