"""Real redis-server processes for tests: free port, own directory, stopped afterwards."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

# Least privilege for a gateway (docs/security.md, "Redis security"): read the registry, write
# only its own heartbeat, statistics, sketches and prediction log (a transaction WATCHing a key
# no one writes), subscribe only to the hints.
GATEWAY_ACL = (
    "on >gateway-secret resetkeys %R~{onnxgate}:* %RW~{onnxgate}:gateway:*"
    " %W~{onnxgate:*}:stats:* %RW~{onnxgate:*}:sketch:* %RW~{onnxgate:*}:pred:*"
    " %R~{onnxgate:*}:quality:*"
    " resetchannels &{onnxgate}:events -@all +ping +get +hget +hgetall +smembers +zrange"
    " +lrange +subscribe +multi +exec +del +hset +expire +expireat +incrby +hincrby +set"
    " +mget +hmget +watch +unwatch"
)

# What a gateway that drives rollouts needs on top of a serving gateway's rights: a decision
# writes the rollout, the rule, the audit and the epoch, and publishes the hint; the label
# join reads the labels and writes the quality state under its own lease; quality events
# write their episodes.
CONTROLLER_ACL = GATEWAY_ACL.replace("%W~{onnxgate:*}:stats:*", "%RW~{onnxgate:*}:stats:*") + (
    " %RW~{onnxgate}:rollout* %RW~{onnxgate}:route:* %RW~{onnxgate}:audit:* %RW~{onnxgate}:epoch"
    " %RW~{onnxgate}:label-joiner %RW~{onnxgate:*}:labels* %RW~{onnxgate:*}:quality:*"
    " %RW~{onnxgate}:quality-events:*"
    " +set +incrby +xadd +publish +scan +xrange +xtrim +sadd"
)

# On a Redis Cluster, on top: the client learns the slots' owners (CLUSTER SLOTS) and each
# command's keys (COMMAND), and hints go by sharded pub/sub.
CLUSTER_ACL = " +cluster|slots +command +ssubscribe +spublish"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    ca, ca_key = directory / "ca.crt", directory / "ca.key"

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
            str(ca), "-days", "1", "-subj", "/CN=onnxgate-test-ca")  # fmt: skip
    san = directory / "san.ext"
    san.write_text("subjectAltName=IP:127.0.0.1\n")
    paths = {"ca": ca}
    for name in ("server", "client"):
        key, csr, crt = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                "-subj", f"/CN={name}")  # fmt: skip
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                "-CAcreateserial", "-out", str(crt), "-days", "1",
                "-extfile", str(san))  # fmt: skip
        paths[f"{name}_cert"], paths[f"{name}_key"] = crt, key
    return paths


class RedisServer:
    """One redis-server on 127.0.0.1; `url` to connect, `stop()` to end it. With
    `certificates`, it speaks only TLS and requires client certificates. With `persistent`,
    every write is in its append-only file before it is acknowledged, so a server killed
    outright and started again on the same port comes back with its data."""

    def __init__(
        self,
        directory: Path,
        certificates: dict[str, Path] | None = None,
        *,
        persistent: bool = False,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--save", "", "--appendonly", "yes" if persistent else "no",
            "--appendfsync", "always", "--protected-mode", "yes",
        ]  # fmt: skip
        if certificates is not None:
            self._command[1:3] = ["--port", "0", "--tls-port", str(self.port),
                                  "--tls-cert-file", str(certificates["server_cert"]),
                                  "--tls-key-file", str(certificates["server_key"]),
                                  "--tls-ca-cert-file", str(certificates["ca"]),
                                  "--tls-auth-clients", "yes"]  # fmt: skip
            self.url = (
                f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={certificates['ca']}"
                f"&ssl_certfile={certificates['client_cert']}"
                f"&ssl_keyfile={certificates['client_key']}"
            )
        self.start()

    def start(self) -> None:
        """Start (again) on the same port, empty unless persistent, and wait until it answers
        PING."""
        self._process = subprocess.Popen(
            self._command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def kill(self) -> None:
        """End the server with SIGKILL, as a crash would: no shutdown, no final save."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
