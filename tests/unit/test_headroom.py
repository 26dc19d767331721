"""CpuHeadroom tells a busy process from one with CPU to spare."""

from __future__ import annotations

import time

from gateway.shadow.headroom import CpuHeadroom


def _burn_until(condition, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        sum(i * i for i in range(10_000))  # keeps this process on the CPU
    return False


def test_spare_turns_false_while_busy_and_back_when_idle():
    headroom = CpuHeadroom(max_busy=0.2, interval=0.05)
    headroom.start()
    try:
        assert _burn_until(lambda: not headroom.spare)
        deadline = time.monotonic() + 20
        while not headroom.spare and time.monotonic() < deadline:
            time.sleep(0.05)  # idle
        assert headroom.spare
    finally:
        headroom.stop()


def test_a_limit_of_one_never_samples():
    headroom = CpuHeadroom(max_busy=1.0, interval=0.01)
    headroom.start()
    assert _burn_until(lambda: False, timeout=0.3) is False
    assert headroom.spare
    headroom.stop()
