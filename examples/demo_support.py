"""What the demos share: a gateway on a private Redis in a temporary directory, the real
gatectl against it, and a rollout watched until it ends."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import grpc

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from registry_client.cli.durations import parse_duration
from registry_client.client import RegistryClient
from registry_client.connection import private_redis_url
from registry_client.rollout.store import RolloutStore

BIN = Path(sys.executable).parent  # the virtualenv's console scripts, next to its python
FINISHED = ("promoted", "rolled_back", "aborted")
START_TIMEOUT_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def heading(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def gatectl(data_dir: Path, *args: str, show: bool = True) -> str:
    """Run the real gatectl against the gateway's private Redis; print the command and its
    output when `show`. A failure ends the demo: every command here is expected to work."""
    command = [str(BIN / "gatectl"), "--data-dir", str(data_dir), "--actor", "demo", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if show:
        print(f"$ gatectl {shlex.join(args)}")
        print(done.stdout.rstrip(), flush=True)
    if done.returncode != 0:
        raise SystemExit(f"gatectl {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


def start_gateway(work: Path, grpc_port: int, extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """`onnxgate serve` on a private Redis in `work`, with the short periods a demo needs:
    statistics and sketches flushed every second, the controller ticking 5 times a second;
    `extra` flags after those."""
    log = (work / "gateway.log").open("wb")
    command = [
        str(BIN / "onnxgate"), "serve", "--data-dir", str(work / "data"), "--host", "127.0.0.1",
        "--grpc-port", str(grpc_port), "--metrics-port", str(free_port()),
        "--replica-id", "demo-gw", "--stats-flush-seconds", "1", "--drift-flush-seconds", "1",
        "--rollout-tick-seconds", "0.2", "--rules-poll-seconds", "0.5", "--log-format", "text",
        *extra,
    ]  # fmt: skip
    gateway = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    log.close()  # the child holds its own copy
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while "gateway started" not in (work / "gateway.log").read_text(errors="replace"):
        if gateway.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the gateway did not start; see {work / 'gateway.log'}")
        time.sleep(0.1)
    return gateway


def wait_until_serving(grpc_port: int, model: str) -> None:
    """Until the gateway has applied the rule: the model answers ModelReady."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=1).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise SystemExit(f"model {model} did not become ready")


def stop(process: subprocess.Popen[bytes] | None, name: str) -> None:
    """SIGTERM (the gateway drains and stops its Redis), then SIGKILL if it hangs."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop after SIGTERM; killing it", file=sys.stderr)
        process.kill()
        process.wait()


def final_status(data_dir: Path, model: str) -> str:
    """How the model's rollout stands, as `gatectl --json rollout status` reports it."""
    return str(json.loads(gatectl(data_dir, "--json", "rollout", "status", model,
                                  show=False))["status"])  # fmt: skip


def roll_out(data_dir: Path, model: str, candidate: str, plan: Sequence[str],
             timeout_seconds: float) -> str:  # fmt: skip
    """Start a rollout of `candidate` with the `plan` flags and print its status after every
    judgement until it ends; return how it ended."""
    gatectl(data_dir, "rollout", "start", model, "--candidate", candidate, *plan)
    # Watched through Redis in this process: a gatectl process (0.6 s of CPU) several times a
    # second would load a small machine, and the latency checks would measure that. gatectl
    # prints the status after each judgement, that is every interval. What it printed is
    # compared, not the state that prompted it: a decision may land while gatectl starts.
    registry = RegistryClient.from_url(private_redis_url(data_dir))
    store = RolloutStore(registry)
    shown = ""  # gatectl's last status output
    deadline = time.monotonic() + timeout_seconds
    try:
        while time.monotonic() < deadline:
            state = store.get(model)
            assert state is not None  # started above
            if decision_line(state.last_decision) not in shown or not state.active:
                print()
                shown = gatectl(data_dir, "rollout", "status", model)
                status = re.search(r"  status (\w+)", shown)
                if status is not None and status.group(1) in FINISHED:
                    break
            time.sleep(0.1)
        else:
            print(f"the rollout of {candidate} did not end in time", file=sys.stderr)
    finally:
        registry.close()
    return final_status(data_dir, model)


def decision_line(decision: Mapping[str, object]) -> str:
    """How `gatectl rollout status` starts its line about this decision ('' for none)."""
    if not decision:
        return ""
    at = datetime.fromtimestamp(float(str(decision["at"])), UTC).isoformat(timespec="seconds")
    return f"last decision {at} {decision['decision']}:"


def run_demo(description: str, name: str, demo: Callable[[Path, str], bool], interval: str) -> int:
    """Parse `--interval` (default `interval`) and `--keep`, run `demo(work, interval)` in a
    temporary directory (removed unless `--keep`) and say how it ended; the exit code."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--interval", default=interval,
                        help=f"judged interval per step ({interval})")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    try:
        parse_duration(args.interval)
    except ValueError as exc:
        parser.error(f"--interval: {exc}")
    work = Path(tempfile.mkdtemp(prefix=f"onnxgate-{name}-demo-"))
    try:
        ok = demo(work, args.interval)
    finally:
        if args.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if not ok:
        print(f"{name} demo FAILED: the rollouts did not end as expected", file=sys.stderr)
        return 1
    print(f"{name} demo OK")
    return 0
