"""`gatectl completion bash|zsh|tcsh`: the shell completion script, generated from gatectl's
own parser (shtab), so it always knows every command and flag of the gatectl that prints it.
It needs no Redis."""

from __future__ import annotations

import argparse
from typing import TextIO

import shtab

from registry_client.cli.context import Commands

__all__ = ["SHELLS", "add_parsers", "print_completion"]

SHELLS = ("bash", "zsh", "tcsh")


def add_parsers(commands: Commands) -> None:
    """Add `completion SHELL` to gatectl's subcommands."""
    completion = commands.add_parser(
        "completion", help="print the shell completion script",
        description="Print the completion script for SHELL. Load it now with"
        " `source <(gatectl completion bash)`, or save it where your shell reads completions,"
        " e.g. `gatectl completion bash > ~/.local/share/bash-completion/completions/gatectl`"
        " or `gatectl completion zsh > \"${fpath[1]}/_gatectl\"`.",
    )  # fmt: skip
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(offline=print_completion)


def print_completion(parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO) -> int:
    out.write(shtab.complete(parser, shell=args.shell))
    return 0
