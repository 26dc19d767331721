"""Progress of `gatectl register`, `import` and `labels import`: drawn on standard error when
it is a terminal (a real pseudo-terminal here), at most ten times a second; nothing when it is
a pipe, or with --quiet."""

from __future__ import annotations

import io
import os
import pty
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from registry_client.cli.progress import Progress
from tests.registry._large_files import GATECTL
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.gateways import REPO_ROOT


def run_on_terminal(url: str, argv: Sequence[str]) -> tuple[int, str, str]:
    """Exit code, standard output (a pipe) and what gatectl drew on its standard error, a
    pseudo-terminal (whose line discipline turns each \\n into \\r\\n)."""
    terminal, gatectl_side = pty.openpty()
    with subprocess.Popen(
        [*GATECTL, "--redis-url", url, "--actor", "alice", *argv], cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=gatectl_side,
    ) as process:  # fmt: skip
        os.close(gatectl_side)
        drawn = bytearray()
        while True:
            try:
                piece = os.read(terminal, 65536)
            except OSError:  # EIO: gatectl, the terminal's last writer, has exited
                break
            if not piece:
                break
            drawn += piece
        assert process.stdout is not None
        out = process.stdout.read().decode()
    os.close(terminal)
    return process.returncode, out, drawn.decode()


def last_states(drawn: str) -> list[str]:
    """What each line shows last: a line is redrawn in place after each \\r, and \\x1b[K
    erases what a longer state left."""
    return [line.rsplit("\r", 1)[-1].removesuffix("\x1b[K")
            for line in drawn.replace("\r\n", "\n").split("\n")]  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for version in ("1", "2"):
        onnx_models.save(onnx_models.classifier(seed=int(version)), tmp_path / "repo", "credit",
                         version)  # fmt: skip
    return tmp_path / "repo"


def test_register_upload_draws_hashing_checking_and_uploading(redis_server, repo):
    path = repo / "credit" / "1" / "model.onnx"
    size = path.stat().st_size
    code, out, drawn = run_on_terminal(
        redis_server.url, ["register", "credit", "1", str(path), "--create-model", "--upload"]
    )
    assert code == 0, drawn
    assert out.startswith("registered credit version 1 sha256 ")
    hashing, checking, uploading, rest = last_states(drawn)
    assert hashing.startswith(f"hashing model.onnx  [{'#' * 24}] 100%  {size} B of {size} B")
    assert checking == "checking model.onnx with onnxruntime"
    assert uploading.startswith(f"uploading model.onnx  [{'#' * 24}] 100%  {size} B of")
    assert rest == ""
    assert "\x1b[K" in drawn  # each redraw erases what a longer line left


def test_import_draws_each_version_under_its_name(redis_server, repo):
    code, _, drawn = run_on_terminal(redis_server.url, ["import", str(repo)])
    assert code == 0, drawn
    names = [line.split("  [")[0] for line in last_states(drawn) if line]
    assert names == [
        f"[{n}/2] credit {n}: {stage} model.onnx{' with onnxruntime' * (stage == 'checking')}"
        for n in (1, 2)
        for stage in ("hashing", "checking")
    ]


def test_quiet_draws_nothing_on_a_terminal(redis_server, repo):
    path = repo / "credit" / "1" / "model.onnx"
    code, out, drawn = run_on_terminal(
        redis_server.url, ["register", "credit", "1", str(path), "--create-model", "-q"]
    )
    assert (code, drawn) == (0, "")
    assert out.startswith("registered credit version 1 sha256 ")


def test_nothing_is_drawn_into_a_pipe(redis_server, repo):
    done = subprocess.run(
        [*GATECTL, "--redis-url", redis_server.url, "--actor", "alice", "import", str(repo)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "model   version\ncredit  1\ncredit  2\n"


def test_labels_import_draws_rows_read_on_a_terminal(redis_server, tmp_path):
    path = onnx_models.save(onnx_models.classifier(), tmp_path, "credit", "1")
    assert run_gatectl(redis_server.url, "register", "credit", "1", str(path),
                       "--create-model")[0] == 0  # fmt: skip
    assert run_gatectl(redis_server.url, "model", "create", "credit", "--task", "binary")[0] == 0
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"id-{i},{i % 2}\n" for i in range(3000)))
    code, _, drawn = run_on_terminal(redis_server.url, ["labels", "import", "credit", str(labels)])
    assert code == 0, drawn
    checking, writing, _ = last_states(drawn)
    assert checking.startswith(f"checking labels.csv  [{'#' * 24}] 100%")
    assert "  3,000 rows" in checking
    assert writing.startswith(f"writing labels.csv  [{'#' * 24}] 100%  3,000 of 3,000 labels")


class Clock:
    """Time that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Screen(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_stage_is_redrawn_at_most_ten_times_a_second():
    screen, clock = Screen(), Clock()
    progress = Progress(screen, clock)
    progress.stage("uploading model.onnx", 1000 << 20)
    for _ in range(1000):  # a MiB every millisecond, for a second
        clock.now += 0.001
        progress.advance(1 << 20)
    redraws = screen.getvalue().count("\r")
    assert 10 <= redraws <= 12  # the first state, one per 0.1 s, the last
    assert screen.getvalue().endswith("100%  1000.0 MiB of 1000.0 MiB  1000.0 MiB/s\x1b[K")


def test_the_line_says_rate_and_time_left():
    screen, clock = Screen(), Clock()
    progress = Progress(screen, clock)
    progress.stage("hashing big.onnx", 400 << 20)
    clock.now += 2
    progress.update(100 << 20)
    assert screen.getvalue().rsplit("\r", 1)[-1] == (
        f"hashing big.onnx  [{'#' * 6}{'.' * 18}]  25%  100.0 MiB of 400.0 MiB  50.0 MiB/s"
        "  ETA 0:06\x1b[K"
    )
    progress.end()
    assert screen.getvalue().endswith("\n")


def test_progress_is_silent_off_a_terminal_or_when_quiet():
    assert not Progress.on(io.StringIO()).enabled
    assert not Progress.on(Screen(), quiet=True).enabled
    assert Progress.on(Screen()).enabled
