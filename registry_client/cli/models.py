"""`gatectl models` and `gatectl model create|show`: the models and their serving settings."""

from __future__ import annotations

import argparse
import json

from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.tables import print_table

__all__ = ["add_parsers"]


def add_parsers(commands: Commands) -> None:
    """Add `models` and `model` to gatectl's subcommands."""
    models = commands.add_parser("models", help="list models")
    models.set_defaults(handler=list_models)

    model = commands.add_parser("model", help="create or describe a model")
    model.add_argument("action", choices=["create", "show"])
    model.add_argument("name")
    model.add_argument("--owner")
    model.add_argument("--description")
    model.add_argument("--tags", help="comma-separated")
    model.add_argument(
        "--batch-delay-us", type=int,
        help="dynamic batching for this model's versions: -1 off, else the longest wait",
    )  # fmt: skip
    model.add_argument("--max-batch-size", type=int, help="rows per batched run and request")
    model.set_defaults(handler=create_or_show_model)


def list_models(args: argparse.Namespace, context: CommandContext) -> int:
    client, out = context.client, context.out
    models = {name: client.show_model(name) for name in client.list_models()}
    if context.emit_json:
        print(json.dumps(models), file=out)
        return EXIT_OK
    rows = [
        [name, m.get("owner", ""), len(m["versions"]), m.get("description", "")]
        for name, m in models.items()
    ]
    print_table([["model", "owner", "versions", "description"], *rows], out)
    return EXIT_OK


def create_or_show_model(args: argparse.Namespace, context: CommandContext) -> int:
    """`model create` writes the model, then shows it as `model show` does."""
    client, out = context.client, context.out
    if args.action == "create":
        tags = None if args.tags is None else [t for t in args.tags.split(",") if t]
        client.create_model(args.name, actor=context.actor, owner=args.owner,
                            description=args.description, tags=tags,
                            batch_delay_us=args.batch_delay_us,
                            max_batch_size=args.max_batch_size)  # fmt: skip
    shown = client.show_model(args.name)
    if context.emit_json:
        print(json.dumps(shown), file=out)
    else:
        print_table([["field", "value"], *([k, v] for k, v in shown.items())], out)
    return EXIT_OK
