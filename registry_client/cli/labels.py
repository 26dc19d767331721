"""`gatectl labels import MODEL FILE`: the true values of earlier predictions, named by their
ids, from a CSV or .npz file (label_files.py reads them) into the model's label stream.

The whole file is checked before anything is written, then written in batches of --batch
labels (RegistryClient.put_labels, one pipeline each); it is read a row at a time both times,
never held whole. Ids are not looked up: a label for an unknown or expired prediction is
counted unmatched by the join, and a second label for an id replaces the first, so importing
a file again is safe. --dry-run checks it all and writes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TextIO

import redis

from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.dry_run import add_dry_run_argument, show_planned
from registry_client.cli.exit_codes import EXIT_OK, EXIT_REJECTED, EXIT_UNREACHABLE
from registry_client.cli.label_files import LabelFile, open_label_file
from registry_client.cli.progress import Progress, add_quiet_argument
from registry_client.cli.tables import printable
from registry_client.client import RegistryClient
from registry_client.errors import NotFound, Rejected, Unreachable
from registry_client.quality.labels import Label

__all__ = ["DEFAULT_BATCH", "MAX_BATCH", "add_parsers", "import_labels"]

DEFAULT_BATCH = 1000
MAX_BATCH = 100_000  # one pipeline's appends; a lost connection leaves at most this in doubt
MAX_PROBLEMS_SHOWN = 10
_ROWS_PER_UPDATE = 1024  # rows read between two reports of progress (each costs a format)
_CREATE_HINT = "gatectl model create {model} --task binary|multiclass|regression"


def _batch_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to {MAX_BATCH}")
    return size


def add_parsers(commands: Commands) -> None:
    """Add `labels import` to gatectl's subcommands."""
    labels = commands.add_parser("labels", help="true values of earlier predictions, by id")
    actions = labels.add_subparsers(dest="action", required=True)
    imported = actions.add_parser(
        "import", help="from a CSV (request_id,label[,weight]) or .npz file",
        description="Store the true values of earlier predictions, named by their ids. The"
        " whole file is checked before anything is written; importing it again is safe (a"
        " second label for an id replaces the first).",
    )  # fmt: skip
    imported.add_argument("model")
    imported.add_argument("file", type=Path, help=".csv or .npz")
    imported.add_argument(
        "--batch", type=_batch_size, default=DEFAULT_BATCH, metavar="N",
        help=f"labels written per round trip ({DEFAULT_BATCH})",
    )  # fmt: skip
    add_dry_run_argument(imported)
    add_quiet_argument(imported)
    imported.set_defaults(handler=import_labels)


def _check_model(client: RegistryClient, model: str) -> None:
    """The model exists and has a quality config; otherwise its labels would never join."""
    if client.model_quality(model) is not None:
        return
    try:
        client.show_model(model)
    except NotFound:
        raise NotFound(f"model {model!r} is not registered: create it and say how it is scored:"
                       f" {_CREATE_HINT.format(model=model)}") from None  # fmt: skip
    raise Rejected(f"model {model!r} has no quality config, so its labels would never be"
                   " joined: say how it is scored first:"
                   f" {_CREATE_HINT.format(model=model)}")  # fmt: skip


def _checked_rows(source: LabelFile, progress: Progress, err: TextIO) -> int | None:
    """Read the whole file; the number of labels, or None after printing its problems."""
    rows = problems = 0
    progress.stage(f"checking {source.path.name}", source.size)
    for row in source.rows():
        if row.label is None:
            problems += 1
            if problems <= MAX_PROBLEMS_SHOWN:
                progress.end()
                print(f"gatectl: {printable(source.path)}: {printable(row.where)}:"
                      f" {printable(row.problem)}", file=err)  # fmt: skip
        else:
            rows += 1
        if (rows + problems) % _ROWS_PER_UPDATE == 0:
            progress.update(int(source.done * source.size), f"{rows + problems:,} rows")
    progress.update(source.size, f"{rows + problems:,} rows")
    progress.end()
    if problems:
        more = problems - MAX_PROBLEMS_SHOWN
        shown = f" ({more} more not shown)" if more > 0 else ""
        print(f"gatectl: {printable(source.path)}: {problems} invalid rows{shown}; nothing"
              " was written", file=err)  # fmt: skip
        return None
    return rows


def _write(
    client: RegistryClient, model: str, source: LabelFile, total: int, batch_size: int,
    progress: Progress,
) -> tuple[int, int]:  # fmt: skip
    """Write every label in batches; (labels written, batches). Unreachable carries on as
    _Interrupted with what was written before."""
    written = batches = 0
    batch: list[Label] = []

    def put() -> None:
        nonlocal written, batches
        try:
            written += client.put_labels(model, batch)
        except Unreachable as exc:
            raise _Interrupted(written, len(batch), exc) from exc
        except redis.exceptions.NoPermissionError as exc:  # every append of the batch refused
            raise Rejected(f"this Redis user may not append to {client.keys.labels(model)}"
                           f" (XADD; docs/security.md has the grant); {written:,} labels were"
                           " written") from exc  # fmt: skip
        batches += 1
        batch.clear()
        progress.update(written)

    progress.stage(f"writing {source.path.name}", total, unit="labels")
    for row in source.rows():
        if row.label is None:  # it was valid when checked
            raise Rejected(f"{source.path} changed while it was imported ({row.where}:"
                           f" {row.problem}); {written} labels were written; import it again"
                           " once it is complete")  # fmt: skip
        batch.append(row.label)
        if len(batch) >= batch_size:
            put()
    if batch:
        put()
    progress.end()
    return written, batches


class _Interrupted(Exception):
    """Redis became unreachable after `written` labels, while a batch of `pending` went."""

    def __init__(self, written: int, pending: int, cause: Unreachable) -> None:
        super().__init__(str(cause))
        self.written, self.pending = written, pending


def import_labels(args: argparse.Namespace, context: CommandContext) -> int:
    """Check the model and the whole file, then write it in batches; print a summary. With
    --dry-run, what would be appended is shown instead, and nothing is."""
    client, model, out, err = context.client, args.model, context.out, context.err
    _check_model(client, model)
    source = open_label_file(args.file)
    progress = Progress.on(err, args.quiet)
    total = _checked_rows(source, progress, err)
    if total is None:
        return EXIT_REJECTED
    if args.dry_run:
        batches = -(-total // args.batch)
        return show_planned(context, f"labels of model {model}", None,
                            {"appended": total, "batches": batches,
                             "stream": client.keys.labels(model)})  # fmt: skip
    summary: dict[str, object] = {"model": model, "file": str(args.file), "rows": total}
    try:
        written, batches = _write(client, model, source, total, args.batch, progress)
    except _Interrupted as stop:
        progress.end()
        print(f"gatectl: {printable(stop)}", file=err)
        print(f"gatectl: {stop.written:,} of {total:,} labels were written; of the {stop.pending:,}"
              " being written then, any part may be stored. Run the same import again once"
              " Redis answers: a label written twice replaces itself (the join counts it"
              " once)", file=err)  # fmt: skip
        if context.emit_json:
            print(json.dumps({**summary, "imported": stop.written, "complete": False}), file=out)
        return EXIT_UNREACHABLE
    if context.emit_json:
        print(json.dumps({**summary, "imported": written, "batches": batches,
                          "complete": True}), file=out)  # fmt: skip
    else:
        print(f"imported {written:,} labels into {printable(model)} from"
              f" {printable(args.file)} in {batches} batch{'es' if batches != 1 else ''}",
              file=out)  # fmt: skip
    return EXIT_OK
