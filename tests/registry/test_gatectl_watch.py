"""`--watch` on `route status` and `rollout status`: a new print at each change, the end of a
rollout ends the watch with its exit code, Ctrl-C ends it with 0. Bounded: every watch here
ends by an event the test causes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from registry_client.cli.exit_codes import EXIT_OK, EXIT_ROLLOUT_FAILED
from registry_client.cli.main import main
from registry_client.cli.watching import watch
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.gateways import REPO_ROOT, eventually
from tests.support.redis_server import RedisServer


@pytest.fixture
def url(redis_server: RedisServer, tmp_path: Path) -> str:
    """credit 1 and 2; the rule sends everything to 1."""
    for version in ("1", "2"):
        path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", version)
        flags = ["--create-model"] if version == "1" else []
        assert (
            run_gatectl(redis_server.url, "register", "credit", version, str(path), *flags)[0] == 0
        )
    assert run_gatectl(redis_server.url, "route", "set", "credit", "--split", "1=100")[0] == 0
    return str(redis_server.url)


class _Shared(io.StringIO):
    """What a watcher on another thread has printed so far."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            return super().write(text)

    def text(self) -> str:
        with self._lock:
            return self.getvalue()


def test_rollout_status_watch_ends_with_the_rollout_and_says_how(url):
    assert run_gatectl(url, "rollout", "start", "credit", "--candidate", "2")[0] == 0
    out, err = _Shared(), io.StringIO()
    codes: list[int] = []
    argv = ["--redis-url", url, "rollout", "status", "credit", "--watch", "--interval", "0.1"]
    watcher = threading.Thread(target=lambda: codes.append(main(argv, {"USER": "bob"}, out, err)))
    watcher.start()
    eventually(lambda: "status progressing" in out.text())
    assert run_gatectl(url, "rollout", "abort", "credit", "--reason", "enough")[0] == 0
    watcher.join(timeout=15)
    assert codes == [EXIT_ROLLOUT_FAILED], err.getvalue()
    printed = out.text()
    assert printed.index("status progressing") < printed.index("status aborted")
    # Tables, one after the other, a blank line between two; the last is the final state.
    assert "status aborted" in printed.split("\n\n")[-1]


def test_route_status_watch_prints_each_change_and_ends_on_ctrl_c(url):
    command = [sys.executable, "-c",
               "from registry_client.cli.main import main; raise SystemExit(main())"]  # fmt: skip
    with subprocess.Popen(
        [*command, "--redis-url", url, "-o", "json", "route", "status", "credit", "--watch",
         "--interval", "0.1"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "USER": "bob"},
    ) as watcher:  # fmt: skip
        try:
            assert watcher.stdout is not None and watcher.stderr is not None
            first = json.loads(watcher.stdout.readline())
            assert first["revision"] == 1
            changed = run_gatectl(
                url, "route", "set", "credit", "--split", "1=50,2=50", "--no-wait"
            )
            assert changed[0] == 0
            second = json.loads(watcher.stdout.readline())  # printed because it changed
            assert second["revision"] == 2
            watcher.send_signal(signal.SIGINT)
            assert watcher.wait(timeout=15) == EXIT_OK
            assert "Traceback" not in watcher.stderr.read()
        finally:
            watcher.kill()


def test_watch_prints_only_what_changed_and_returns_the_final_code():
    reads = iter([("a\n", None), ("a\n", None), ("b\n", None), ("c\n", 6)])
    out, naps = io.StringIO(), list[float]()
    assert watch(lambda: next(reads), out, 0.5, naps.append) == 6
    assert out.getvalue() == "a\n\nb\n\nc\n"
    assert naps == [0.5, 0.5, 0.5]
