"""What gatectl's quality commands share (accuracy, fairness, compare's live columns): a model's
quality config with its window of joined rows, the --segment check, the window's flags, and how
quality figures are written."""

from __future__ import annotations

import argparse
import time
from typing import Any

from registry_client.cli.durations import long_duration_argument
from registry_client.cli.formatting import iso_time, optional_number
from registry_client.client import RegistryClient
from registry_client.errors import NotFound, Rejected
from registry_client.quality.report import QualityRange, minutes_of, read_range
from registry_client.quality.task import QualityConfig

__all__ = [
    "ALL_VALUES",
    "HEADLINE_METRICS",
    "PRIMARY",
    "ROLES",
    "SHADOW",
    "TASK_METRICS",
    "QualityWindow",
    "add_window_arguments",
    "checked_segment",
    "format_age",
    "format_count",
    "format_metric",
    "read_quality_window",
]

PRIMARY, SHADOW = "primary", "shadow"
ROLES = (PRIMARY, SHADOW)
# The columns `gatectl accuracy` prints per task; --json carries every metric computed.
TASK_METRICS = {
    "binary": ("auc_roc", "pr_auc", "precision", "recall", "f1", "accuracy", "brier",
               "log_loss", "ece"),
    "multiclass": ("accuracy", "macro_f1"),
    "regression": ("mae", "rmse", "bias", "r2"),
}  # fmt: skip
# What `gatectl compare` shows beside the registered metrics.
HEADLINE_METRICS = {
    "binary": ("auc_roc", "precision", "recall"),
    "multiclass": ("accuracy", "macro_f1"),
    "regression": ("mae", "rmse"),
}
ALL_VALUES = "(all)"  # the segment column of a version's row over every value
# Errors in the label's own unit are not rates in [0, 1]: significant digits, not decimals.
_UNBOUNDED = frozenset({"mae", "rmse", "bias", "log_loss"})


def format_metric(name: str, value: float | None) -> str:
    """A metric as the tables print it; "-" when undefined."""
    return optional_number(value, ".4g" if name in _UNBOUNDED else ".4f")


def format_count(value: float) -> str:
    """Rows are weighted: a whole number as one, else four significant digits."""
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def format_age(seconds: float | None) -> str:
    """A label delay in the unit that reads best: 42s, 25m, 3.5h, 2.1d."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h" if seconds < 172800 else f"{seconds / 86400:.1f}d"


class QualityWindow:
    """A model's quality config and its joined rows over a window ending now; `segment`, when
    given, is checked before anything else is read."""

    def __init__(self, client: RegistryClient, model: str, since_seconds: float, now: float,
                 segment: str | None = None) -> None:  # fmt: skip
        info = client.show_model(model)  # NotFound names the model
        config = client.model_quality(model)
        if config is None:
            raise Rejected(
                f"model {model!r} has no quality config (field quality): expected one, given"
                f" with gatectl model create {model} --task binary|multiclass|regression"
            )
        if segment is not None:
            checked_segment(config, segment)
        self.model, self.config, self.since_seconds, self.now = model, config, since_seconds, now
        self.registered: list[str] = list(info["versions"])
        first, last = minutes_of(since_seconds, now)
        self.first_minute = first
        self.range: QualityRange = read_range(client.quality, client.predictions, model, first,
                                              last)  # fmt: skip

    def check_version(self, version: str) -> str:
        """`version`, when registered or found in the window; NotFound otherwise."""
        if version not in self.registered and version not in {v for v, _ in self.range.pairs()}:
            raise NotFound(f"model {self.model!r} has no version {version!r} (registered:"
                           f" {', '.join(self.registered) or 'none'})")  # fmt: skip
        return version

    def header(self) -> dict[str, Any]:
        """What every report says of its window."""
        return {
            "model": self.model, "task": self.config.task, "since_seconds": self.since_seconds,
            "from": iso_time(self.first_minute * 60), "to": iso_time(self.now),
            "joiners": sorted(self.range.writers),
        }  # fmt: skip


def read_quality_window(
    client: RegistryClient, model: str, since_seconds: float, now: float | None = None,
    segment: str | None = None,
) -> QualityWindow:  # fmt: skip
    """The model's window; NotFound (no such model) or Rejected (no quality config, or a
    `segment` the model is not reported by)."""
    now = time.time() if now is None else now
    return QualityWindow(client, model, since_seconds, now, segment)


def checked_segment(config: QualityConfig, name: str) -> str:
    """`name` when the model is reported by it; Rejected naming --segment otherwise."""
    if name not in config.segments:
        configured = (
            ", ".join(config.segments) or "none configured: gatectl model create --segments"
        )
        raise Rejected(f"--segment: expected one of the model's segments ({configured}),"
                       f" got {name!r}")  # fmt: skip
    return name


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    """--since: the predictions' window."""
    parser.add_argument(
        "--since", type=long_duration_argument, default=7 * 86400.0,
        help="predictions from how far back: 30s, 15m, 2h, 1d, up to 90d (7d)",
    )  # fmt: skip
