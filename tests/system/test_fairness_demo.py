"""examples/fairness_demo.py, run as a reader runs it: a real gateway, real gatectl, labels
arriving after their predictions. The unfair candidate must be rolled back while still a
shadow, having answered nobody, and the good one promoted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.gateways import REPO_ROOT

DEMO = REPO_ROOT / "examples" / "fairness_demo.py"


@pytest.mark.timeout(300)
def test_the_fairness_demo_rolls_the_unfair_shadow_back_and_promotes_the_good_one() -> None:
    done = subprocess.run(
        [sys.executable, str(DEMO), "--interval", "4s"],
        capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    output = done.stdout
    assert done.returncode == 0, output[-6000:] + done.stderr[-4000:]
    unfair, good = output.split("=== candidate 3: evaluated on a held-out labelled set")
    assert "candidate 2  baseline 1  status rolled_back" in unfair
    assert "fairness_gap" in unfair  # the check that failed it is shown
    assert "candidate 3  baseline 1  status promoted" in good
    assert "candidate 2: rolled_back (expected rolled_back)" in output
    assert "candidate 3: promoted (expected promoted)" in output
    assert "candidate 2 answered no application: True (expected True)" in output
