"""SIGTERM under load: the final status of every call of clients that keep sending ModelInfer
through a gateway's drain without retrying.

Each round starts a real gateway (`python -m gateway serve --models REPO --no-registry`, the
tiny model) from one source tree, has --threads client threads send ModelInfer in a closed loop
over --channels connections (one TCP connection each), sends SIGTERM after --load-seconds and
lets the threads keep sending until the gateway process has exited. Every call's final status
code is counted, with its details (digits masked) and when it ended relative to SIGTERM. The
client does not look at health and does not retry (gRPC's own transparent retry of a stream the
server never saw stays on, as in any client).

Trees given with --tree NAME=PATH are run in turn within each round, so load on the shared
machine hits every tree alike. To compare a change with the last commit:

    git -C . worktree add /tmp/drain-before HEAD
    .venv/bin/python benchmarks/drain_under_load.py --tree before=/tmp/drain-before --tree after=.

Exit code 1 when a call ended with a code other than OK and UNAVAILABLE (the goal; gRPC core's
CANCELLED for calls queued as intake closes misses it, see docs/reliability.md), 2 when a round
could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from bench_report import display_command
from load import CHANNEL_OPTIONS, OWN_CONNECTION
from models import build_repository, tiny_request
from servers import HOST, ROOT, BenchError, kill_group, tail

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc

MODEL = "tiny"
ALLOWED = frozenset({"OK", "UNAVAILABLE"})
START_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 10.0
EXIT_MARGIN_S = 15.0  # waited for the exit beyond the grace; then reported as exit None
DETAILS_CHARS = 110


@dataclass
class Ending:
    """How many calls ended with one code and details, and when (seconds after SIGTERM)."""

    count: int = 0
    first_s: float | None = None
    last_s: float | None = None


@dataclass
class Tally:
    """Final statuses of one round's calls; threads add to it under its lock."""

    codes: Counter[str] = field(default_factory=Counter)
    endings: dict[tuple[str, str], Ending] = field(default_factory=dict)
    sigterm_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, code: str, details: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.codes[code] += 1
            if code == "OK" and self.sigterm_at is None:
                return  # the steady state before SIGTERM needs no timing
            after = None if self.sigterm_at is None else now - self.sigterm_at
            ending = self.endings.setdefault((code, details), Ending())
            ending.count += 1
            if after is not None:
                ending.first_s = after if ending.first_s is None else ending.first_s
                ending.last_s = after


@dataclass
class Round:
    """One gateway's run from start to exit."""

    tree: str
    index: int
    codes: dict[str, int]
    endings: list[dict[str, Any]]
    exit_code: int | None
    exit_after_s: float | None


def _masked(details: str | None) -> str:
    """Details with numbers masked, so one kind of failure is one line."""
    return re.sub(r"\d+", "N", details or "")[:DETAILS_CHARS]


def _send(
    stub: pb_grpc.GRPCInferenceServiceStub,
    request: pb.ModelInferRequest,
    tally: Tally,
    stop: threading.Event,
) -> None:
    """One client thread: call, count the final status, call again; never retry."""
    while not stop.is_set():
        try:
            stub.ModelInfer(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as err:
            call = err if isinstance(err, grpc.Call) else None
            code = call.code().name if call is not None else type(err).__name__
            tally.add(code, _masked(call.details() if call is not None else str(err)))
        else:
            tally.add("OK", "")


def _pump(stream: IO[str], lines: list[str], started: threading.Event) -> None:
    for line in stream:
        lines.append(line)
        if '"gateway started"' in line:
            started.set()


@contextlib.contextmanager
def _gateway(tree: Path, repo: Path, args: argparse.Namespace) -> Iterator[tuple[Any, int]]:
    """A gateway process run from `tree` (its own `gateway` package); yields it and its port."""
    command = [sys.executable, "-m", "gateway", "serve", "--models", str(repo), "--no-registry",
               "--host", HOST, "--grpc-port", "0", "--metrics-port", "-1", "--log-format",
               "json", "--drain-notice-seconds", str(args.drain_notice_seconds),
               "--shutdown-grace-seconds", str(args.grace_seconds)]  # fmt: skip
    # `-m` puts the working directory first on sys.path: the tree's code runs, not the install.
    process = subprocess.Popen(
        command, cwd=tree, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        lines: list[str] = []
        started = threading.Event()
        pump = threading.Thread(target=_pump, args=(process.stderr, lines, started), daemon=True)
        pump.start()
        if not started.wait(START_TIMEOUT_S):
            raise BenchError(f"gateway in {tree} did not start: {tail(''.join(lines))}")
        entry = json.loads(next(line for line in lines if '"gateway started"' in line))
        yield process, int(entry["grpc_port"])
    finally:
        kill_group(process)
        if process.stderr is not None:
            process.stderr.close()


def _wait_ready(port: int, process: Any) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(grpc.RpcError):
                if stub.ServerReady(pb.ServerReadyRequest(), timeout=1).ready:
                    return
            time.sleep(0.05)
    raise BenchError("gateway did not become ready")


def run_round(name: str, tree: Path, index: int, repo: Path, args: argparse.Namespace) -> Round:
    """Start a gateway, load it, SIGTERM it, keep loading until it exits; count the answers."""
    tally = Tally()
    stop = threading.Event()
    request = tiny_request()
    exit_code: int | None = None
    exit_after: float | None = None
    with _gateway(tree, repo, args) as (process, port), contextlib.ExitStack() as channels:
        _wait_ready(port, process)
        stubs = [
            pb_grpc.GRPCInferenceServiceStub(
                channels.enter_context(
                    grpc.insecure_channel(f"{HOST}:{port}", [*CHANNEL_OPTIONS, OWN_CONNECTION])
                )
            )
            for _ in range(args.channels)
        ]
        threads = [
            threading.Thread(
                target=_send, args=(stubs[i % len(stubs)], request, tally, stop), daemon=True
            )
            for i in range(args.threads)
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(args.load_seconds)  # the steady load the drain interrupts
            with tally.lock:
                tally.sigterm_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                exit_code = process.wait(args.grace_seconds + EXIT_MARGIN_S)
                exit_after = time.monotonic() - tally.sigterm_at
        finally:
            stop.set()
            for thread in threads:
                thread.join(CALL_TIMEOUT_S + 5)
    endings = [
        {"code": code, "details": details, "count": e.count, "first_s": e.first_s,
         "last_s": e.last_s}
        for (code, details), e in sorted(tally.endings.items(), key=lambda kv: -kv[1].count)
    ]  # fmt: skip
    return Round(name, index, dict(tally.codes), endings, exit_code, exit_after)


def _tree(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    tree = Path(path).resolve()
    if not sep or not name or not (tree / "gateway" / "__main__.py").is_file():
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=PATH to a source tree")
    return name, tree


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", type=_tree, action="append", dest="trees",
                   help="NAME=PATH of a source tree to run the gateway from (repeatable; "
                        "default: this checkout)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=6, help="SIGTERMs per tree (6)")
    p.add_argument("--threads", type=int, default=8, help="client threads (8)")
    p.add_argument("--channels", type=int, default=4, help="client connections (4)")
    p.add_argument("--load-seconds", type=float, default=3.0, help="load before SIGTERM (3)")
    p.add_argument("--drain-notice-seconds", type=float, default=1.0,
                   help="the gateway's --drain-notice-seconds (1, its default)")  # fmt: skip
    p.add_argument("--grace-seconds", type=float, default=5.0,
                   help="the gateway's --shutdown-grace-seconds (5)")  # fmt: skip
    p.add_argument("--json-out", type=Path, help="also write every round as JSON here")
    args = p.parse_args(argv)
    args.trees = args.trees or [("this", ROOT)]
    return args


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def report(rounds: list[Round], trees: list[tuple[str, Path]]) -> bool:
    """Print counts per tree and code, and every non-OK ending; True when all were allowed."""
    clean = True
    for name, path in trees:
        mine = [r for r in rounds if r.tree == name]
        totals: Counter[str] = Counter()
        for r in mine:
            totals.update(r.codes)
        others = {code: n for code, n in totals.items() if code not in ALLOWED}
        with_others = sum(1 for r in mine if set(r.codes) - ALLOWED)
        clean = clean and not others
        print(f"\n{name} ({path}): {len(mine)} rounds, {sum(totals.values()):,} calls")
        for code, n in totals.most_common():
            print(f"  {code:<18} {n:>9,}")
        print(f"  rounds with a code other than OK/UNAVAILABLE: {with_others} of {len(mine)}")
        exits = [r.exit_after_s for r in mine if r.exit_after_s is not None]
        codes = sorted({r.exit_code for r in mine}, key=str)
        print(f"  exit codes {codes}, SIGTERM to exit {_seconds(min(exits, default=None))}-"
              f"{_seconds(max(exits, default=None))} s")  # fmt: skip
        print("  non-OK endings (count, first-last s after SIGTERM, details):")
        merged: dict[tuple[str, str], Ending] = {}
        for r in mine:
            for e in r.endings:
                if e["code"] == "OK":
                    continue
                m = merged.setdefault((e["code"], e["details"]), Ending())
                m.count += e["count"]
                firsts = [v for v in (m.first_s, e["first_s"]) if v is not None]
                lasts = [v for v in (m.last_s, e["last_s"]) if v is not None]
                m.first_s, m.last_s = min(firsts, default=None), max(lasts, default=None)
        for (code, details), m in sorted(merged.items(), key=lambda kv: -kv[1].count):
            print(f"    {code:<18} {m.count:>7,}  {_seconds(m.first_s)}-{_seconds(m.last_s)}  "
                  f"{details}")  # fmt: skip
    return clean


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"$ {display_command()}")
    work = Path(tempfile.mkdtemp(prefix="onnxgate-drain-"))
    rounds: list[Round] = []
    failed = False
    try:
        repo = work / "models"
        build_repository(repo, [MODEL])
        for index in range(args.rounds):
            for name, tree in args.trees:
                try:
                    r = run_round(name, tree, index, repo, args)
                except BenchError as err:
                    print(f"round {index} {name}: FAILED {err}", flush=True)
                    failed = True
                    continue
                rounds.append(r)
                odd = {c: n for c, n in r.codes.items() if c not in ALLOWED}
                print(f"round {index} {name}: {sum(r.codes.values()):,} calls, "
                      f"UNAVAILABLE {r.codes.get('UNAVAILABLE', 0):,}, other {odd or 0}, "
                      f"exit {r.exit_code} after {_seconds(r.exit_after_s)} s",
                      flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    clean = report(rounds, args.trees)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps([r.__dict__ for r in rounds], indent=2) + "\n")
    if failed:
        return 2
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
