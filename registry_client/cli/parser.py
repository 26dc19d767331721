"""gatectl's argument parser: the output flags are accepted by every command and subcommand,
so they may stand anywhere on the command line, as kubectl's do (`gatectl route show credit
--json` and `gatectl --json route show credit` print the same)."""

from __future__ import annotations

import argparse
from typing import Any

from registry_client.cli.exit_codes import EXIT_CODES_HELP

__all__ = ["EPILOG", "OUTPUT_FORMATS", "GatectlParser", "wants_json"]

OUTPUT_FORMATS = ("table", "json", "yaml")

# Below every command's help: how gatectl finds Redis, and what its exit code says.
EPILOG = f"""environment:
  ONNXGATE_REDIS_URL  the registry's Redis (--redis-url wins); without either, the private
                      Redis of a gateway in ONNXGATE_DATA_DIR (--data-dir), by default
                      ~/.local/share/onnxgate
  ONNXGATE_NAMESPACE  the registry's key namespace (--namespace; default onnxgate)
  USER                who acts, in the audit (--actor wins)

{EXIT_CODES_HELP}"""


class GatectlParser(argparse.ArgumentParser):
    """An ArgumentParser whose every instance (argparse makes the subcommands' parsers of the
    same class) takes --json and -o FORMAT. Their defaults are suppressed, so a subcommand
    that does not see them leaves what an earlier position set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("epilog", EPILOG)
        super().__init__(*args, **kwargs)
        self.add_argument(
            "-o", dest="output_format", choices=OUTPUT_FORMATS, default=argparse.SUPPRESS,
            help="output format: table (the default), json, or yaml (gatectl get rules)",
        )  # fmt: skip
        self.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                          help="print JSON instead of tables (-o json)")  # fmt: skip

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """argparse's check, except that an unknown command word is answered with the
        commands listed in help: hidden ones (aliases.py) are not offered."""
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            listed = ", ".join(repr(choice.dest) for choice in action._choices_actions)
            # Named by its dest, as argparse names it without a metavar (aliases.py sets one).
            raise argparse.ArgumentError(
                None, f"argument {action.dest}: invalid choice: {value!r} (choose from {listed})"
            )
        super()._check_value(action, value)

    def format_help(self) -> str:
        """The help as argparse wraps it, then the epilog as written (its columns line up)."""
        epilog, self.epilog = self.epilog, None
        try:
            text = super().format_help()
        finally:
            self.epilog = epilog
        return f"{text}\n{epilog}" if epilog else text


def wants_json(args: argparse.Namespace) -> bool:
    """Whether the command line asked for JSON, wherever it said so."""
    return bool(getattr(args, "json", False)) or getattr(args, "output_format", "") == "json"
