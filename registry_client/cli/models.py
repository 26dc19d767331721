"""`gatectl models` and `gatectl model create|show`: the models, their serving settings and
how their quality is measured."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.dry_run import add_dry_run_argument, show_planned
from registry_client.cli.durations import format_duration, long_duration_argument
from registry_client.cli.exit_codes import EXIT_OK, EXIT_USAGE
from registry_client.cli.tables import print_table
from registry_client.errors import NotFound
from registry_client.quality.task import TASKS, QualityConfig

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
    _add_quality_arguments(model)
    add_dry_run_argument(model)
    model.set_defaults(handler=create_or_show_model)


# The quality flags; given any, `model create` resolves a new config (the rest inferred or kept).
QUALITY_FLAGS = ("task", "score_output", "threshold", "positive_label", "segments",
                 "max_segment_values", "label_deadline")  # fmt: skip


def _add_quality_arguments(model: argparse.ArgumentParser) -> None:
    quality = model.add_argument_group(
        "quality", "how predictions are scored against labels; not given: inferred from the"
        " newest version's outputs, or kept as stored",
    )  # fmt: skip
    quality.add_argument("--task", metavar="|".join(TASKS))
    quality.add_argument(
        "--score-output", metavar="NAME[:INDEX]",
        help="the output holding the score, and its column (none: the whole row)",
    )  # fmt: skip
    quality.add_argument("--threshold", type=float, help="binary: positive at or above (0.5)")
    quality.add_argument("--positive-label", type=int, help="binary: 0 or 1 (1)")
    quality.add_argument("--segments", help="comma-separated label attributes (at most 8)")
    quality.add_argument("--max-segment-values", type=int, help="values kept per segment (32)")
    quality.add_argument(
        "--label-deadline", type=long_duration_argument,
        help="how long a prediction waits for its label: 30s, 15m, 2h, 1d (7d)",
    )  # fmt: skip


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
    """`model create` writes the model, then shows it as `model show` does; with --dry-run
    it shows the fields that would change instead, and writes nothing."""
    client, out = context.client, context.out
    if args.action == "show" and args.dry_run:
        print(
            "gatectl: --dry-run: only `model create` writes; `model show` reads", file=context.err
        )
        return EXIT_USAGE
    if args.action == "create":
        tags = None if args.tags is None else [t for t in args.tags.split(",") if t]
        quality = _quality(args, context) if any(
            getattr(args, flag) is not None for flag in QUALITY_FLAGS
        ) else None  # fmt: skip
        after = client.create_model(args.name, actor=context.actor, owner=args.owner,
                                    description=args.description, tags=tags,
                                    batch_delay_us=args.batch_delay_us,
                                    max_batch_size=args.max_batch_size, quality=quality,
                                    dry_run=args.dry_run)  # fmt: skip
        if args.dry_run:
            return show_planned(context, f"model {args.name}", _stored(context, args.name),
                                _flat(after))  # fmt: skip
    shown = client.show_model(args.name)
    if context.emit_json:
        print(json.dumps(shown), file=out)
    else:
        print_table([["field", "value"], *_rows(shown)], out)
    return EXIT_OK


def _quality(args: argparse.Namespace, context: CommandContext) -> QualityConfig:
    """The config the quality flags given make, with the rest inferred or kept as stored."""
    segments = None
    if args.segments is not None:
        segments = [s.strip() for s in args.segments.split(",") if s.strip()]
    return context.client.resolve_quality(
        args.name, task=args.task, score_output=args.score_output, threshold=args.threshold,
        positive_label=args.positive_label, segments=segments,
        max_segment_values=args.max_segment_values,
        label_deadline_seconds=args.label_deadline,
    )  # fmt: skip


def _stored(context: CommandContext, name: str) -> dict[str, Any] | None:
    """The model's fields as a dry run compares them; None when it is not registered."""
    try:
        return _flat(context.client.show_model(name))
    except NotFound:
        return None


def _flat(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The stored fields, the quality config (a dict, or its JSON text) one per field."""
    flat: dict[str, Any] = {}
    for field, value in fields.items():
        if field in ("versions", "quality_error"):  # not fields create writes
            continue
        config = value
        if field == "quality" and isinstance(value, str):
            try:
                config = json.loads(value)
            except ValueError:  # unreadable as stored: compared as its text
                config = value
        if field == "quality" and isinstance(config, dict):
            flat.update((f"quality.{k}", v) for k, v in config.items())
        else:
            flat[field] = value
    return flat


def _rows(shown: dict[str, Any]) -> list[list[object]]:
    """`model show`'s rows: the stored fields, the quality config one row per field."""
    rows: list[list[object]] = []
    for field, value in shown.items():
        if field == "quality" and isinstance(value, dict):
            rows.extend([f"quality.{k}", _quality_value(k, v)] for k, v in value.items())
        else:
            rows.append([field, value])
    return rows


def _quality_value(field: str, value: object) -> object:
    if field == "segments" and isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if field == "label_deadline_seconds" and isinstance(value, int | float):
        return format_duration(value)
    return "-" if value is None else value
