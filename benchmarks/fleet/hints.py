"""Every simulated gateway's hint subscription in one simulator process, followed by one
thread over epoll, which notes when each subscription's socket had the hint.

A gateway's own hint thread (gateway/routing/hints.py) wakes as soon as its socket has a
message; hundreds of such threads in one simulator process would instead queue for its one
CPU and its GIL, and each arrival would be noted as late as its thread got its turn, which
measures the simulator, not Redis. One thread over epoll notes one time for all the sockets
that became readable together; the subscriptions themselves are the registry's
(RegistryClient.events()), and each is read with its own Subscription.wait. The gateways'
reaction, reading the epoch and every rule, runs on a pool as the woken followers would, once
the burst of arrivals has been noted (on one CPU it would otherwise delay the noting).
"""

from __future__ import annotations

import selectors
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import redis

from benchmarks.fleet.replica import SimulatedGateway
from registry_client.connection import Subscription
from registry_client.errors import RegistryError

__all__ = ["HintListeners"]

RESYNC_THREADS = 4
SELECT_SECONDS = 0.25
# A hint reaches every subscriber within about a millisecond of the publication; the woken
# followers' reads start once none has arrived for this long, so that the simulator's CPU
# spent on them does not delay noting the arrivals still coming.
BURST_SECONDS = 0.002


def _sockets(subscription: Subscription) -> list[object]:
    # The sockets under the subscription (one server's, or the shard's serving the channel),
    # for epoll; neither Subscription nor redis-py's pub/sub offers them otherwise.
    connections = subscription._connections()
    return [c._sock for c in connections if c._sock is not None]


class HintListeners:
    """Follows every gateway's hints until stop(); `arrived` is called after each batch of
    hints and after each follower's read."""

    def __init__(self, gateways: Sequence[SimulatedGateway], arrived: Callable[[], None]) -> None:
        self._gateways = list(gateways)
        self._arrived = arrived
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._subscriptions: dict[str, Subscription] = {}
        self._resyncs = ThreadPoolExecutor(RESYNC_THREADS, thread_name_prefix="fleet-resync")
        self._thread = threading.Thread(target=self._run, name="fleet-hints", daemon=True)
        self.reconnects = 0

    def subscribe_all(self) -> int:
        """Subscribe every gateway; returns how many are subscribed."""
        for gateway in self._gateways:
            self._subscribe(gateway)
        return len(self._subscriptions)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._resyncs.shutdown(wait=True, cancel_futures=True)
        for subscription in self._subscriptions.values():
            subscription.close()

    def _subscribe(self, gateway: SimulatedGateway) -> None:
        try:
            subscription = gateway.client.events()
            sockets = _sockets(subscription)
        except (RegistryError, redis.RedisError):
            return
        self._subscriptions[gateway.name] = subscription
        for sock in sockets:
            self._selector.register(sock, selectors.EVENT_READ, gateway)  # type: ignore[arg-type]

    def _resubscribe(self, gateway: SimulatedGateway) -> None:
        subscription = self._subscriptions.pop(gateway.name, None)
        if subscription is not None:
            for key in list(self._selector.get_map().values()):
                if key.data is gateway:
                    self._selector.unregister(key.fileobj)
            subscription.close()
        self.reconnects += 1
        self._subscribe(gateway)

    def _resync(self, gateway: SimulatedGateway) -> None:
        gateway.resync()
        self._arrived()

    def _run(self) -> None:
        woken: list[SimulatedGateway] = []  # hinted, their followers' reads not yet started
        while not self._stop.is_set():
            ready = self._selector.select(BURST_SECONDS if woken else SELECT_SECONDS)
            if not ready:
                for hinted in woken:  # the burst is over: now the followers read
                    self._resyncs.submit(self._resync, hinted)
                woken.clear()
                continue
            now = time.monotonic()
            for key, _ in ready:
                gateway: SimulatedGateway = key.data
                subscription = self._subscriptions.get(gateway.name)
                if subscription is None:
                    continue
                try:
                    got = False
                    while subscription.wait(0):  # a subscribe confirmation is no hint
                        got = True
                except (redis.RedisError, OSError):
                    self._resubscribe(gateway)  # as the gateway: subscribe again, read all
                    got = True
                if got:
                    gateway.hints.append(now)
                    woken.append(gateway)
            self._arrived()
