"""The registry's change hints: a thread subscribed to `{ns}:events` that wakes the follower.

A hint only says "read again": pub/sub loses what is published while disconnected, so every
subscription, and every reconnect of one, asks the follower for a full read instead. The
thread also runs a check of the follower's between messages (a quarter of a second apart at
most), as the follower itself may be stuck in a Redis call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import redis

from registry_client.client import RegistryClient
from registry_client.errors import RegistryError

__all__ = ["HintListener"]

MAX_BACKOFF_SECONDS = 2.0  # between attempts to subscribe while Redis is away


class HintListener:
    """Calls `on_hint` for each hint, `on_subscribed` after each (re)subscription and `check`
    between messages, on its own thread, until `stop` is set."""

    def __init__(
        self,
        registry: RegistryClient,
        stop: threading.Event,
        *,
        on_hint: Callable[[], None],
        on_subscribed: Callable[[], None],
        check: Callable[[], None],
    ) -> None:
        self._registry = registry
        self._stop = stop
        self._on_hint = on_hint
        self._on_subscribed = on_subscribed
        self._check = check
        self._thread = threading.Thread(target=self._listen, name="onnxgate-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _listen(self) -> None:
        try:
            self._listen_until_stopped()
        except Exception:
            # A gateway that stops does not wait for this thread: the client's connections
            # may be closed under it, which is no error then.
            if not self._stop.is_set():
                raise

    def _listen_until_stopped(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                subscription = self._registry.events()
            except (RegistryError, redis.RedisError):
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = 0.05
            self._subscribed()  # (re)subscribed: read what may have been missed
            # redis-py reconnects and resubscribes by itself when the connection drops, and
            # this loop sees no error: hints published meanwhile are lost unless that
            # reconnect, too, asks for a resync.
            subscription.on_reconnect(self._subscribed)
            try:
                while not self._stop.is_set():
                    if subscription.wait(0.25):
                        self._on_hint()
                    self._check()
            except (redis.RedisError, OSError):
                self._on_hint()
            finally:
                subscription.close()

    def _subscribed(self, _connection: object = None) -> None:
        self._on_subscribed()
