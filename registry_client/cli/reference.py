"""gatectl's command reference, written from its own parser: `python -m
registry_client.cli.reference > docs/gatectl-reference.md` (a test fails while the committed
file differs). Every command and subcommand gatectl lists (hidden aliases are not), with its
usage, help, arguments and options, their defaults, and the epilog every command's help ends
with. Usage lines are wrapped at a fixed width, whatever the terminal, so the file only
changes when the parser does."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Iterator
from typing import TextIO

from registry_client.cli.durations import (
    duration_argument,
    format_duration,
    long_duration_argument,
)
from registry_client.cli.main import build_parser
from registry_client.cli.parser import EPILOG

__all__ = ["WIDTH", "main", "reference_text"]

WIDTH = 100  # argparse wraps usage lines at $COLUMNS; the reference at this
# The output flags every parser has (parser.py): said once, not in every table.
_EVERYWHERE = {"-h", "-o", "--json"}
_HEADER = """# gatectl reference

Every gatectl command, subcommand, argument and option, with its defaults: generated from
gatectl's parser by `python -m registry_client.cli.reference > docs/gatectl-reference.md`,
never edited by hand. What the commands are for, with examples: [gatectl.md](gatectl.md).

Every command also takes `-h`/`--help`, and the output flags `-o table|json|yaml` and `--json`
anywhere on its command line ([Output](gatectl.md#output)). Every command's help ends with
the environment gatectl reads and its exit codes:

```text
{epilog}```
"""


def reference_text() -> str:
    """The whole reference, as Markdown."""
    root = build_parser()
    commands = list(_commands(root, ("gatectl",), ""))
    lines = [_HEADER.format(epilog=EPILOG), "## Commands", ""]
    lines += [f"- [{' '.join(words)}](#{'-'.join(words)}): {what}"
              for words, _, what in commands[1:]]  # fmt: skip
    for words, parser, what in commands:
        lines += ["", f"## {' '.join(words)}", ""]
        lines += _section(words, parser, what)
    return "\n".join(lines).rstrip() + "\n"


def _commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...], what: str
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """This command and, depth first, every subcommand its parent lists with a help line."""
    yield words, parser, what
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for listed in action._choices_actions:  # hidden aliases have no entry here
                sub = action.choices[listed.dest]
                yield from _commands(sub, (*words, listed.dest), listed.help or "")


def _section(words: tuple[str, ...], parser: argparse.ArgumentParser, what: str) -> list[str]:
    """One command: its help line, description, usage, then each group of its arguments."""
    parser.formatter_class = functools.partial(argparse.HelpFormatter, width=WIDTH)
    lines = [what, ""] if what else []
    if parser.description and parser.description != what:
        lines += [parser.description, ""]
    lines += ["```text", parser.format_usage().rstrip(), "```"]
    formatter = parser._get_formatter()
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if not set(a.option_strings) & _EVERYWHERE]  # fmt: skip
        if not actions:
            continue
        if any(isinstance(a, argparse._SubParsersAction) for a in actions):
            lines += ["", "commands:", "", *_command_table(words, actions)]
            continue
        lines += ["", f"{group.title}:" if not group.description else
                  f"{group.title}: {group.description}", ""]  # fmt: skip
        lines += _table(formatter, actions)
    if parser.epilog and parser.epilog != EPILOG:
        lines += ["", "```text", parser.epilog.rstrip(), "```"]
    return lines


def _command_table(words: tuple[str, ...], actions: list[argparse.Action]) -> list[str]:
    """The subcommands listed, each linked to its section."""
    rows = [f"| [{c.dest}](#{'-'.join((*words, c.dest))}) | {_cell(c.help or '')} |"
            for a in actions if isinstance(a, argparse._SubParsersAction)
            for c in a._choices_actions]  # fmt: skip
    return ["| command | what it does |", "| --- | --- |", *rows]


def _table(formatter: argparse.HelpFormatter, actions: list[argparse.Action]) -> list[str]:
    rows = []
    for action in actions:
        invocation = formatter._format_action_invocation(action)
        text = formatter._expand_help(action) if action.help else ""
        rows.append(f"| `{_cell(invocation)}` | {_cell(text)} | {_cell(_default(action))} |")
    return ["| argument | help | default |", "| --- | --- | --- |", *rows]


def _default(action: argparse.Action) -> str:
    """What the argument is when not given, as typed on a command line ('' when nothing)."""
    if action.required and action.option_strings:
        return "required"
    value = action.default
    if action.nargs == 0 or value in (None, argparse.SUPPRESS, "") or value == []:
        return ""  # a switch, or nothing when not given
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    if action.type in (duration_argument, long_duration_argument) and isinstance(value, float):
        return format_duration(value)  # as typed: 5m, not 300.0
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _cell(text: str) -> str:
    """Text in one Markdown table cell: one line, `|` escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def main(out: TextIO = sys.stdout) -> int:
    out.write(reference_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
