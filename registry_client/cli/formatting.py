"""How gatectl writes timestamps and the optional numbers of its tables."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["iso_now", "iso_time", "optional_number"]


def iso_time(unix_seconds: float) -> str:
    """UTC, to the second: 2026-10-01T12:00:00+00:00."""
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat(timespec="seconds")


def iso_now() -> str:
    """The current time as iso_time() writes it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def optional_number(value: float | None, spec: str, suffix: str = "") -> str:
    """`value` in format `spec` with `suffix`; "-" for no value (nothing measured)."""
    return "-" if value is None else format(value, spec) + suffix
