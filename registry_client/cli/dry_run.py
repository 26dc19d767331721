"""`--dry-run` on gatectl's writes: every check the write makes is made, what it would change
is printed as a diff of the record's fields, and nothing is written.

A command with --dry-run computes the record before and the record it would write (each a
flat mapping of field to value, None for "absent") and hands both to show_planned().
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from registry_client.cli.context import CommandContext
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.tables import printable

__all__ = ["DRY_RUN_HELP", "add_dry_run_argument", "field_changes", "show_planned"]

DRY_RUN_HELP = "check everything and show what would change; write nothing"


def add_dry_run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def field_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[str]:
    """`field before -> after` for each field that differs, in the order first seen (`-`
    for absent: a record created has every field from `-`, one deleted every field to `-`)."""
    was, will = before or {}, after or {}
    names = list(dict.fromkeys([*was, *will]))
    return [
        f"{name} {_text(was.get(name))} -> {_text(will.get(name))}"
        for name in names
        if was.get(name) != will.get(name)
    ]


def show_planned(
    context: CommandContext,
    subject: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> int:
    """Print what a write checked and would do to `subject` (e.g. "model credit"); nothing
    was written. JSON: {"dry_run": true, "subject", "before", "after", "changes"}."""
    lines = field_changes(before, after)
    if context.emit_json:
        shown = {"dry_run": True, "subject": subject, "before": before, "after": after,
                 "changes": lines}  # fmt: skip
        print(json.dumps(shown, default=str), file=context.out)
        return EXIT_OK
    print(f"{printable(subject)}  (dry run: nothing written)", file=context.out)
    for line in lines or ["no change"]:
        print(f"  {printable(line)}", file=context.out)
    return EXIT_OK
