"""Old spellings of gatectl commands, kept for one release (the next one removes them) as
hidden aliases: each prints a one-line deprecation notice on standard error, then runs
exactly what its new spelling runs. The command line is spelled anew and parsed again by the
same parser, so the new spelling's checks, defaults and handler are the ones that run.

Hidden: an alias is added without a help line, so argparse's help, shtab's completion
scripts and the reference (reference.py) skip it, and the parser names only the visible
commands in its usage and its errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO, TypeVar

__all__ = ["ALIASES", "Alias", "add_parsers", "respell"]


@dataclass(frozen=True, slots=True)
class Alias:
    """An old spelling: its command word, its arguments, and how it is said now: the new
    command line and the usage the notice names."""

    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    spelled: Callable[[argparse.Namespace], tuple[list[str], str]]


def _version_status_action(text: str) -> str:
    """STATUS of `version-status` -> the `version` action that sets it now."""
    actions = {"retired": "retire", "registered": "unretire"}
    if text == "serving":
        raise argparse.ArgumentTypeError(
            "'serving' is no longer set by hand: a version serves while a rule routes to it"
            " (gatectl route set MODEL --split VERSION=WEIGHT; gatectl versions shows it)"
        )
    if text not in actions:
        raise argparse.ArgumentTypeError(f"expected registered or retired, got {text!r}")
    return actions[text]


def _version_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model")
    parser.add_argument("version")
    parser.add_argument("status", type=_version_status_action, metavar="STATUS")


def _version_status(args: argparse.Namespace) -> tuple[list[str], str]:
    action = str(args.status)
    return ["version", action, args.model, args.version], f"gatectl version {action} MODEL VERSION"


# Every spelling gatectl had that it no longer has, with what replaced it.
ALIASES = (Alias("version-status", _version_status_arguments, _version_status),)


_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)


def add_parsers(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add the aliases to gatectl's commands, hidden; call it after every visible command."""
    visible = [choice.dest for choice in commands._choices_actions]
    for alias in ALIASES:
        parser = commands.add_parser(
            alias.name, description=f"deprecated: gatectl {alias.name} goes in the next release"
        )
        alias.add_arguments(parser)
        parser.set_defaults(alias=alias)
    # argparse's usage would list every choice of the command word: name the visible ones
    commands.metavar = "{" + ",".join(visible) + "}"


def respell(
    parser: argparse.ArgumentParser, args: argparse.Namespace, err: TextIO
) -> argparse.Namespace:
    """`args` of an alias parsed again as its new spelling, after the notice on `err`. The
    global options keep what the command line gave them."""
    alias: Alias = args.alias
    argv, usage = alias.spelled(args)
    print(f"gatectl: `{alias.name}` is deprecated; use `{usage}`", file=err)
    kept = {
        action.dest: getattr(args, action.dest)
        for action in parser._actions
        if not isinstance(
            action, argparse._SubParsersAction | argparse._HelpAction | argparse._VersionAction
        )
        and hasattr(args, action.dest)
    }
    return parser.parse_args(argv, namespace=argparse.Namespace(**kept))
