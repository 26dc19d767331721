"""A private redis-server in the gateway's data directory, so one command runs everything.

Unix socket only (no TCP port), mode 0700, append-only file on: rules and registry survive a
restart. If a live server already answers on the socket (another gateway on this machine
started it), it is shared, not started again, and not stopped by us.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from registry_client.connection import PRIVATE_SOCKET_NAME, private_redis_url

__all__ = ["PrivateRedis", "PrivateRedisError"]
START_TIMEOUT_SECONDS = 10.0


class PrivateRedisError(RuntimeError):
    """Raised when the private redis-server cannot be started; the message says what to do."""


def _answers(socket_path: Path) -> bool:
    client = redis.Redis(unix_socket_path=str(socket_path), socket_connect_timeout=0.2)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


class PrivateRedis:
    """Starts, shares or stops the redis-server of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.socket_path = data_dir / PRIVATE_SOCKET_NAME
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect with."""
        return private_redis_url(self.data_dir)

    def start(self) -> None:
        """Make sure a server answers on the socket; start one when none does."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if _answers(self.socket_path):
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise PrivateRedisError(
                "redis-server is not installed: install it (apt-get install -y redis-server)"
                " or point the gateway at a Redis with --redis-url"
            )
        self.socket_path.unlink(missing_ok=True)  # left by a crash; nobody answers on it
        self._process = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(self.socket_path),
             "--unixsocketperm", "700", "--dir", str(self.data_dir), "--appendonly", "yes",
             "--logfile", str(self.data_dir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _answers(self.socket_path):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise PrivateRedisError(
                    f"redis-server did not start in {self.data_dir}: see"
                    f" {self.data_dir / 'redis.log'}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server if this gateway started it (SIGTERM: it flushes its data first)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=30)
        self._process = None
