"""What a gatectl command handler is given, and how command groups plug into the parser.

Each command group (models.py, versions.py, routes.py, ...) builds its subcommands with
`add_parsers(commands)` and binds each leaf to its handler with `set_defaults(handler=...)`;
main.py parses, connects and calls `args.handler(args, context)`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO, TypeAlias

from registry_client.client import RegistryClient

__all__ = ["CommandContext", "Commands", "Handler"]


@dataclass(frozen=True, slots=True)
class CommandContext:
    """The connected registry, who acts (for the audit), where to print and in which form."""

    client: RegistryClient
    actor: str
    out: TextIO
    err: TextIO
    emit_json: bool  # --json: JSON on `out` instead of tables


# A handler returns gatectl's exit code; refusals are raised (RegistryError, SchemaError) and
# main() maps them to theirs.
Handler: TypeAlias = Callable[[argparse.Namespace, CommandContext], int]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
