"""After gatectl writes a rule: wait for the live gateways to apply its revision, and say which
did not and why (a version FAILED, an error for the model, still loading).

Gateways report in their heartbeats (RegistryClient.replica_status): the revision each has
applied, the one it works towards, the one it gave up on (a version failed to load; it then
keeps serving its previous rule) with its error, and each version's state. A gateway writes
its heartbeat at once when any of that changes, and every --heartbeat-seconds (5) otherwise;
it picks a new rule up at once from the change hint, or at its next epoch poll
(--rules-poll-seconds, 2). So a poll every POLL_SECONDS sees each outcome soon after the
gateway has it, and DEFAULT_WAIT_SECONDS covers a missed hint, a heartbeat period and the loads
of small models; a longer load is reported as still loading.

Each poll also reads the rule back. Redis replicates asynchronously: a primary that
acknowledges a write and fails before its replica has it loses the write when the replica
is promoted. The rule read back is then older than the revision written, which is said
(exit 4), rather than waited for until the timeout.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from registry_client.cli.exit_codes import EXIT_NOT_APPLIED, EXIT_OK
from registry_client.cli.tables import printable
from registry_client.client import RegistryClient
from registry_client.errors import Unreachable

__all__ = [
    "APPLIED",
    "DEFAULT_WAIT_SECONDS",
    "FAILED",
    "PENDING",
    "ApplyReport",
    "GatewayOutcome",
    "add_wait_arguments",
    "gateway_outcome",
    "print_outcome",
    "show_and_wait",
    "wait_for_revision",
]

DEFAULT_WAIT_SECONDS = 10.0
MAX_WAIT_SECONDS = 3600.0
POLL_SECONDS = 0.2  # a few Redis reads per poll and live gateway; an outcome is seen this late
APPLIED, FAILED, PENDING = "applied", "failed", "pending"


@dataclass(frozen=True, slots=True)
class GatewayOutcome:
    """One live gateway and a written revision: APPLIED, FAILED (it gave up on the rule) or
    PENDING (neither yet); `detail` says why not, as the gateway reported it."""

    replica: str
    state: str
    serving: int | None  # the revision it applied last (serves now)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """Every live gateway's outcome at the last look, `waited_seconds` after the write."""

    model: str
    revision: int
    gateways: tuple[GatewayOutcome, ...]
    waited_seconds: float

    @property
    def applied(self) -> list[str]:
        """The live gateways that applied the revision (or one written after it)."""
        return [g.replica for g in self.gateways if g.state == APPLIED]

    @property
    def not_applied(self) -> list[GatewayOutcome]:
        """The live gateways that did not, with why."""
        return [g for g in self.gateways if g.state != APPLIED]

    def to_dict(self) -> dict[str, Any]:
        """What --json adds to a write's output under "apply"."""
        return {
            "revision": self.revision, "live_gateways": len(self.gateways),
            "applied": self.applied, "waited_seconds": round(self.waited_seconds, 3),
            "not_applied": {g.replica: {"state": g.state, "serving": g.serving,
                                        "detail": g.detail} for g in self.not_applied},
        }  # fmt: skip


def _revision(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _seconds(value: object) -> float | None:
    return value if isinstance(value, int | float) else None


def _within(revision: int | None, lowest: int, highest: int) -> bool:
    return revision is not None and lowest <= revision <= highest


@dataclass(frozen=True, slots=True)
class _Heartbeat:
    """The fields of one entry of replica_status()["replicas"] that say where a gateway stands,
    each checked: any writer may have put anything in a heartbeat."""

    replica: str
    applied: int | None  # the revision it serves
    target: int | None  # the revision it is loading the versions of
    rejected: int | None  # the revision it gave up on; `error` says why
    error: str  # why the model's newest rule is not applied
    loading: tuple[tuple[object, float | None], ...]  # LOADING versions, with seconds so far
    failed: tuple[tuple[object, object], ...]  # FAILED versions, with the reason

    @classmethod
    def of(cls, replica: Mapping[str, Any]) -> _Heartbeat:
        states = [s for s in replica.get("version_states") or [] if isinstance(s, Mapping)]
        return cls(
            replica=str(replica.get("replica", "")),
            applied=_revision(replica.get("applied_revision")),
            target=_revision(replica.get("target_revision")),
            rejected=_revision(replica.get("rejected_revision")),
            error=str(replica.get("error") or ""),
            loading=tuple((s.get("version"), _seconds(s.get("loading_seconds")))
                          for s in states if s.get("state") == "LOADING"),
            failed=tuple((s.get("version"), s.get("reason") or "no reason given")
                         for s in states if s.get("state") == "FAILED"),
        )  # fmt: skip


def _pending_detail(gateway: _Heartbeat, revision: int, newest: int) -> str:
    """Why a gateway has neither applied nor given up on `revision` (the newest written
    being `newest`): what it is loading, its error unless that is about an older rule, the
    versions that FAILED there, or that it has not seen the revision yet."""
    if _within(gateway.target, revision, newest):
        if gateway.loading:
            loading = [f"version {version}" if seconds is None
                       else f"version {version} ({seconds:.0f} s)"
                       for version, seconds in gateway.loading]  # fmt: skip
            return f"still loading {', '.join(loading)}"
        return f"working towards revision {gateway.target}"
    # The error goes with the rejected revision when there is one: an older rule's is stale.
    if gateway.error and (gateway.rejected is None or gateway.rejected >= revision):
        return gateway.error
    if gateway.failed:
        return "; ".join(f"version {version} FAILED: {reason}"
                         for version, reason in gateway.failed)  # fmt: skip
    return f"has not picked up revision {revision} yet"


def gateway_outcome(
    replica: Mapping[str, Any], revision: int, stored_revision: int | None
) -> GatewayOutcome:
    """Where one gateway (an entry of replica_status()["replicas"]) stands with `revision`,
    the rule as stored being at `stored_revision` now. A revision written after ours counts as
    ours: the gateway follows the registry, and our rule was superseded."""
    newest = max(revision, stored_revision or revision)
    gateway = _Heartbeat.of(replica)
    # Not a plain >=: a registry restored from scratch counts revisions from 1 again, while a
    # gateway may still serve a higher one from before.
    if _within(gateway.applied, revision, newest):
        detail = "" if gateway.applied == revision else (
            f"applied revision {gateway.applied}, written since")  # fmt: skip
        return GatewayOutcome(gateway.replica, APPLIED, gateway.applied, detail)
    if _within(gateway.rejected, revision, newest):
        return GatewayOutcome(gateway.replica, FAILED, gateway.applied, gateway.error)
    return GatewayOutcome(gateway.replica, PENDING, gateway.applied,
                          _pending_detail(gateway, revision, newest))  # fmt: skip


def wait_for_revision(
    client: RegistryClient, model: str, revision: int, timeout_seconds: float,
    poll_seconds: float = POLL_SECONDS,
) -> ApplyReport:  # fmt: skip
    """Poll the heartbeats until every live gateway has applied or given up on `revision` of
    the model's rule, or `timeout_seconds` have passed; at once when no gateway is live.
    Unreachable when the rule is read back older than `revision`: the write was acknowledged
    and lost (module docstring)."""
    started = time.monotonic()
    deadline = started + timeout_seconds
    while True:
        try:
            status = client.replica_status(model)
        except Unreachable:  # a failover under way: its new primary answers soon
            if time.monotonic() >= deadline:
                raise
            time.sleep(poll_seconds)
            continue
        stored = _revision(status.get("revision"))
        if stored is None or stored < revision:
            raise Unreachable(
                f"the registry lost revision {revision} of {model}'s rule after acknowledging"
                f" it: it holds {'no rule' if stored is None else f'revision {stored}'} now."
                " Redis failed over before a replica had the write (or an older copy was"
                " restored); read the rule and write it again"
            )
        outcomes = tuple(gateway_outcome(r, revision, stored) for r in status["replicas"])
        now = time.monotonic()
        settled = all(o.state != PENDING for o in outcomes)
        if settled or now >= deadline:
            return ApplyReport(model, revision, outcomes, now - started)
        time.sleep(min(poll_seconds, deadline - now))


def print_outcome(
    report: ApplyReport | None,
    wait_seconds: float,
    out: TextIO | None,
    err: TextIO,
    *,
    named: bool = False,
) -> int:
    """Say how a written revision was taken up and return gatectl's exit code: 0 when every
    live gateway applied it, when some did (the others are listed on `err` as a warning) and
    when none is live (a note: gateways apply it as they start); EXIT_NOT_APPLIED when none of
    the live ones did. `out` gets the one-line summary (None: it is in the JSON already);
    `report` None (--no-wait) says nothing. `named`: the summary names the model and revision
    (several rules were written)."""
    if report is None:
        return EXIT_OK
    what = f"revision {report.revision} of {printable(report.model)}"
    live, missing = len(report.gateways), report.not_applied
    if not live:
        print(f"gatectl: note: no live gateway; {what} is stored and gateways apply it as they"
              " start", file=err)  # fmt: skip
        return EXIT_OK
    applied = live - len(missing)
    if out is not None:
        named_as = f"{printable(report.model)} revision {report.revision}: " if named else ""
        print(f"{named_as}applied by {applied} of {live} live gateways", file=out)
    if not missing:
        return EXIT_OK
    waited = f"{report.waited_seconds:.1f} s after the write (--wait {wait_seconds:g})"
    if applied:
        print(f"gatectl: warning: {what} not applied by {len(missing)} of {live} live"
              f" gateways {waited}:", file=err)  # fmt: skip
    else:
        print(f"gatectl: {what} not applied by any of the {live} live gateways {waited}:",
              file=err)  # fmt: skip
    for gateway in missing:
        serving = "none" if gateway.serving is None else f"revision {gateway.serving}"
        print(f"  {printable(gateway.replica)} (serving {serving}): {printable(gateway.detail)}",
              file=err)  # fmt: skip
    print("  the rule stays stored; each keeps serving the revision shown (a version that FAILED"
          " is not tried again until the rule changes): gatectl route status"
          f" {printable(report.model)}", file=err)  # fmt: skip
    return EXIT_OK if applied else EXIT_NOT_APPLIED


def show_and_wait(
    client: RegistryClient, model: str, revision: int, wait_seconds: float | None,
    view: dict[str, Any], print_view: Callable[[TextIO], None], out: TextIO, err: TextIO,
    *, emit_json: bool,
) -> int:  # fmt: skip
    """Print what a write stored, wait (unless `wait_seconds` is None) and report; returns
    the exit code. Tables come first, so the write shows while the gateways are waited for;
    JSON comes last, with the outcome under "apply"."""
    if not emit_json:
        print_view(out)
        out.flush()
    report = None
    if wait_seconds is not None:
        report = wait_for_revision(client, model, revision, wait_seconds)
    if emit_json:
        shown = view if report is None else {**view, "apply": report.to_dict()}
        print(json.dumps(shown), file=out)
    return print_outcome(report, 0.0 if wait_seconds is None else wait_seconds,
                         None if emit_json else out, err)  # fmt: skip


def _wait_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= MAX_WAIT_SECONDS:  # NaN fails this too
        raise argparse.ArgumentTypeError(
            f"expected seconds from 0 to {MAX_WAIT_SECONDS:g}, got {text!r}"
        )
    return seconds


def add_wait_arguments(parser: argparse.ArgumentParser) -> None:
    """--wait SECONDS / --no-wait on a command that writes a rule."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--wait", type=_wait_seconds, default=DEFAULT_WAIT_SECONDS, metavar="SECONDS",
        help="wait this long for every live gateway to apply the rule; report those that did"
        f" not (exit {EXIT_NOT_APPLIED} when none did) ({DEFAULT_WAIT_SECONDS:g})",
    )  # fmt: skip
    group.add_argument(
        "--no-wait", dest="wait", action="store_const", const=None,
        default=DEFAULT_WAIT_SECONDS, help="write and return at once",
    )  # fmt: skip
