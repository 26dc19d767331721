"""Durations as operators type and read them: 30s, 15m, 2h, 1d."""

from __future__ import annotations

import argparse
import re

__all__ = [
    "MAX_DURATION_SECONDS",
    "duration_argument",
    "format_duration",
    "long_duration_argument",
    "parse_duration",
]

MAX_DURATION_SECONDS = 7 * 24 * 3600
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, maximum: float = MAX_DURATION_SECONDS) -> float:
    """'90s', '15m', '2h', '1d' or plain seconds, up to `maximum`; ValueError says what was
    expected."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a duration such as 30s, 15m, 2h or 1d, got {text!r}")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 < seconds <= maximum:
        raise ValueError(f"expected more than 0 and at most {maximum / 86400:g}d, got {text!r}")
    return seconds


def duration_argument(text: str) -> float:
    """parse_duration() as an argparse type: its message becomes the usage error."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def long_duration_argument(text: str) -> float:
    """duration_argument() up to 90 days (how long labels may come after a prediction)."""
    try:
        return parse_duration(text, maximum=90 * 86400)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_duration(seconds: float) -> str:
    """In the largest of h, m and s that divides it: 3600 -> 1h, 5400 -> 90m, 90 -> 90s."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
