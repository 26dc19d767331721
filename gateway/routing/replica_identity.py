"""A gateway's claim on its replica id at start: refused while another live gateway has it.

The replica id names a gateway's heartbeat, statistics, sketches and rollout decisions; an
explicit one is an operator's choice (a StatefulSet pod name, a dashboard key), so a second
gateway under it is refused (exit 2), never renamed behind the operator's back.

Each heartbeat carries its writer's `instance` token (heartbeat.py). A heartbeat of this id
with another token is either a live gateway's or the last one of a gateway that died a
moment ago: a container restarted within a second under the same pod name finds its
predecessor's heartbeat still there, and must not be refused by it. One read cannot tell the
two apart, and its `updated_at` against this host's clock would trust two hosts' clocks to
agree; so the claim watches Redis instead. A heartbeat renewed (or rewritten by yet another
gateway) is a live gateway's: refused. One that disappears (expired, or removed by a gateway
stopping) or stays unchanged for two of its writer's intervals, when a live writer would
have renewed it twice, is a dead gateway's: taken over. A restart after a crash thus waits
at most two heartbeat intervals (logged); after a graceful stop it does not wait.

The claim ends with this gateway's first heartbeat written, so a gateway starting a moment
later under the same id finds it and waits for its renewal. Two starting at the same instant
can both find the id free; each then finds the other's token at its next beat, and the
heartbeat reports the conflict (onnxgate_replica_id_conflict). A registry that does not
answer does not hold the start: the id is left unchecked, as the heartbeat will check it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping

import redis

from gateway.routing.heartbeat import Heartbeat, beat_interval_seconds, heartbeat_ttl_seconds
from registry_client.client import RegistryClient
from registry_client.errors import RegistryError

__all__ = ["UNANSWERED_SECONDS", "ReplicaIdInUse", "claim_replica_id"]

_log = logging.getLogger(__name__)
# A heartbeat read unanswered this long: the registry is unreachable (a blackholed connection
# raises only once its socket timeout has passed on every retry, about 20 s). One socket
# timeout: a registry that answers at all answers a read well within it, even when loaded.
UNANSWERED_SECONDS = 5.0
RENEWALS_AWAITED = 2  # intervals a heartbeat may stay unchanged before its writer is dead
_SERVED_SHOWN = 3  # versions named in a refusal; the rest are counted


class ReplicaIdInUse(RuntimeError):
    """Raised at start when another live gateway heartbeats under this gateway's replica id;
    the message names the id and that gateway and says what to do."""


def claim_replica_id(
    registry: RegistryClient, heartbeat: Heartbeat, unanswered_seconds: float = UNANSWERED_SECONDS
) -> None:
    """Take `heartbeat.replica` for this gateway before anything is written under it.

    Returns once this gateway's first heartbeat is written, or when the registry cannot be
    read or leaves a read unanswered for `unanswered_seconds` (the id is then unchecked,
    logged). ReplicaIdInUse when another live gateway has the id. The claim runs on a
    thread of its own so that a silent registry cannot hold the start; a claim given up
    writes nothing and its thread ends when its read does (the client's timeouts)."""
    claim = _Claim(registry, heartbeat)
    claim.thread.start()
    while not claim.done.wait(0.05):
        if time.monotonic() - claim.answered_at > unanswered_seconds:
            claim.abandoned.set()
            _log.warning(
                "replica id not checked: the registry does not answer; the heartbeat reports a"
                " conflict found later",
                extra={"replica": heartbeat.replica},
            )
            return
    if claim.refusal is not None:
        raise claim.refusal


class _Claim:
    """One claim's state, shared by its thread and the start that waits for it."""

    def __init__(self, registry: RegistryClient, heartbeat: Heartbeat) -> None:
        self._registry = registry
        self._heartbeat = heartbeat
        self.answered_at = time.monotonic()  # of the last read answered
        self.refusal: ReplicaIdInUse | None = None
        self.done = threading.Event()
        self.abandoned = threading.Event()  # the start went on without this claim
        self.thread = threading.Thread(target=self._run, name="onnxgate-replica-claim",
                                       daemon=True)  # fmt: skip

    def _run(self) -> None:
        try:
            self._claim()
        except ReplicaIdInUse as exc:
            self.refusal = exc
        except (RegistryError, redis.RedisError) as exc:
            if not self.abandoned.is_set():
                _log.warning(
                    "replica id not checked: the registry cannot be read; the heartbeat reports"
                    " a conflict found later",
                    extra={"replica": self._heartbeat.replica, "reason": str(exc)},
                )
        finally:
            self.done.set()

    def _read(self) -> dict[str, str]:
        beat = self._registry.read_heartbeat(self._heartbeat.replica)
        self.answered_at = time.monotonic()
        return beat

    def _claim(self) -> None:
        found = self._read()
        taking_over = None
        if found and found.get("instance") != self._heartbeat.instance:
            self._await_renewal(found)
            taking_over = found.get("instance")
        if not self.abandoned.is_set():
            self._heartbeat.beat(taking_over)

    def _await_renewal(self, found: dict[str, str]) -> None:
        """Return once `found` is gone or was not renewed in time; ReplicaIdInUse when it is."""
        replica = self._heartbeat.replica
        interval = beat_interval_seconds(found, self._heartbeat.interval_seconds)
        patience = RENEWALS_AWAITED * interval
        writer = {"replica": replica, "other_host": found.get("host", "?"),
                  "other_pid": found.get("pid", "?")}  # fmt: skip
        _log.warning(
            "replica id has another gateway's heartbeat; waiting to see it renewed (a live"
            " gateway: this one is refused) or not (a dead one: its id is taken over)",
            extra={**writer, "wait_s": round(patience, 2)},
        )
        deadline = time.monotonic() + patience
        while not self.abandoned.wait(min(max(interval / 10, 0.02), 0.5)):
            now = self._read()
            if not now:
                _log.info("replica id free: the other heartbeat is gone", extra=writer)
                return
            if _writer(now) != _writer(found):
                raise ReplicaIdInUse(_refusal(replica, now, interval))
            if time.monotonic() >= deadline:
                _log.warning(
                    "replica id taken over: the other gateway's heartbeat was not renewed",
                    extra={**writer, "waited_s": round(patience, 2)},
                )
                return


def _writer(beat: Mapping[str, str]) -> tuple[str, str]:
    """Which write a heartbeat is: its writer's token and when it wrote."""
    return beat.get("instance", ""), beat.get("updated_at", "")


def _refusal(replica: str, beat: Mapping[str, str], default_interval: float) -> str:
    """Why a gateway is refused: whose heartbeat it found, how fresh, what that one serves."""
    try:
        when = f"{max(time.time() - float(beat.get('updated_at', '')), 0.0):.1f} s ago"
    except ValueError:
        when = "just now"
    who = [f"{k} {beat[k]}" for k in ("host", "pid") if beat.get(k)]
    ttl = heartbeat_ttl_seconds(beat_interval_seconds(beat, default_interval))
    return (
        f"replica id {replica!r} is in use: another gateway heartbeated {when}"
        f" ({', '.join([*who, _serving(beat)])}); give this one another --replica-id, or stop"
        f" that one first (a gateway stopped gracefully frees its id at once, a killed one's"
        f" heartbeat expires within {ttl} s)"
    )


def _serving(beat: Mapping[str, str]) -> str:
    """What a heartbeat says its gateway serves: its READY versions, the first few named."""
    try:
        versions = json.loads(beat.get("versions", "[]"))
    except ValueError:
        versions = None
    if not isinstance(versions, list):
        versions = []
    ready = [str(v).removesuffix(":READY") for v in versions if str(v).endswith(":READY")]
    if not ready:
        return "serving no version yet"
    more = len(ready) - _SERVED_SHOWN
    return "serving " + ", ".join(ready[:_SERVED_SHOWN]) + (f" and {more} more" if more > 0 else "")
