"""Argument types more than one command group parses: NAME=VALUE lists and the free texts
that go into the audit. Each raises argparse.ArgumentTypeError, so argparse prints a usage
error (exit 2) naming the flag."""

from __future__ import annotations

import argparse

from registry_client.schema import MAX_ACTOR_CHARS, MAX_REASON_CHARS, text_problem

__all__ = [
    "REASON_HELP", "actor_name", "add_schema_override_arguments", "name_value_pairs", "reason_text",
]  # fmt: skip

REASON_HELP = f"why, for the audit (at most {MAX_REASON_CHARS} characters, no control characters)"


def name_value_pairs(text: str, what: str) -> list[tuple[str, str]]:
    """'a=1, b=2' -> [('a', '1'), ('b', '2')]; `what` (the flag) names it in the error."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"{what}: expected NAME=VALUE, got {item!r}")
        pairs.append((name.strip(), value.strip()))
    return pairs


def reason_text(text: str) -> str:
    """--reason: at most MAX_REASON_CHARS, no control or format characters."""
    problem = text_problem(text, MAX_REASON_CHARS)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def actor_name(text: str) -> str:
    """--actor: at most MAX_ACTOR_CHARS, no control or format characters ('': the login)."""
    problem = text_problem(text, MAX_ACTOR_CHARS)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def add_schema_override_arguments(parser: argparse.ArgumentParser, reason: bool = True) -> None:
    """--allow-schema-change (and --reason, unless the command has one already)."""
    parser.add_argument(
        "--allow-schema-change", action="store_true",
        help="route a version whose inputs or outputs differ from those its callers were"
        " built against (needs --reason; audited)",
    )  # fmt: skip
    if reason:
        parser.add_argument("--reason", type=reason_text, default="", help=REASON_HELP)
