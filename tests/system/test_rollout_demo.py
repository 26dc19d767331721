"""examples/rollout_demo.py, run as a reader runs it: a real gateway, real gatectl, real
traffic. The bad candidate must roll itself back and the good one be promoted."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.gateways import REPO_ROOT

DEMO = REPO_ROOT / "examples" / "rollout_demo.py"


@pytest.mark.timeout(240)
def test_the_rollout_demo_rolls_the_bad_candidate_back_and_promotes_the_good_one() -> None:
    done = subprocess.run(
        [sys.executable, str(DEMO), "--interval", "3s"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    output = done.stdout
    assert done.returncode == 0, output[-4000:] + done.stderr[-4000:]
    bad, good = output.split("=== rollout of the GOOD candidate 3")
    assert "model credit  candidate 2  baseline 1  status rolled_back" in bad
    assert re.search(r"rollout\.rollback +rolled_back +0 ", bad)
    assert "model credit  candidate 3  baseline 1  status promoted" in good
    assert re.search(r"rollout\.promote +promoted +100 ", good)
    assert "candidate 2: rolled_back (expected rolled_back)" in output
    assert "candidate 3: promoted (expected promoted)" in output
