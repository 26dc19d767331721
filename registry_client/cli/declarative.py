"""`gatectl get rules` and `gatectl apply -f FILE`: every model's rule as one document (YAML or
JSON), so rules can live in git, be reviewed, and be applied with the diff shown first.

apply reads and checks the whole file before writing anything (every rule valid, every model
and version registered and not retired); then it writes each changed model's rule on its own,
with compare-and-set: on the revision the file names, or else on the one its diff was made
against. A model whose rule moved on is refused (exit 3) and the others are still written;
run `get rules` again and re-apply. A file kept in git leaves `revision` out: it says what
each rule must be, whatever it was.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import yaml

from registry_client.cli.apply_wait import add_wait_arguments, print_outcome, wait_for_revision
from registry_client.cli.arguments import REASON_HELP, reason_text
from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.exit_codes import EXIT_CONFLICT, EXIT_OK, EXIT_REJECTED
from registry_client.cli.rule_diff import changes, routing
from registry_client.cli.tables import print_table, printable
from registry_client.errors import Conflict, NotFound, Rejected
from registry_client.records.rule_set import DeclaredRule, parse_rule_set, render_rule_set
from registry_client.schema import MAX_REASON_CHARS, SchemaError

__all__ = ["add_parsers"]

MAX_RULE_SET_BYTES = 4 * 2**20


def add_parsers(commands: Commands) -> None:
    """Add `get rules` and `apply` to gatectl's subcommands."""
    get = commands.add_parser("get", help="every model's rule as one document (-o yaml for git)")
    kinds = get.add_subparsers(dest="kind", required=True)
    rules = kinds.add_parser("rules", help="the rules of all models, or of those named")
    rules.add_argument("models", nargs="*", metavar="MODEL")
    rules.set_defaults(handler=get_rules, yaml_ok=True)
    apply = commands.add_parser(
        "apply", help="set every model's rule from a file, showing the diff (compare-and-set)"
    )
    apply.add_argument("-f", "--filename", required=True, metavar="FILE",
                       help="a rule set as `get rules -o yaml` writes it (YAML or JSON); - reads"
                       " standard input")  # fmt: skip
    apply.add_argument("--dry-run", action="store_true",
                       help="show the diff, write nothing")  # fmt: skip
    apply.add_argument("--reason", type=reason_text, default="", help=REASON_HELP)
    add_wait_arguments(apply)
    apply.set_defaults(handler=apply_rules)


def get_rules(args: argparse.Namespace, context: CommandContext) -> int:
    """The rules as one document. A stored rule that cannot be read is left out of it, named
    on stderr with why, and the exit is 1: a file written from it would lack that model."""
    rules, invalid = context.client.rules()
    if args.models:
        missing = sorted(set(args.models) - set(rules) - set(invalid))
        if missing:
            raise NotFound(f"no rule for model(s) {', '.join(map(repr, missing))}")
        rules = {model: rules[model] for model in args.models if model in rules}
        invalid = {model: invalid[model] for model in args.models if model in invalid}
    for model, found in sorted(invalid.items()):
        print(f"gatectl: rule of model {printable(model)!r} left out: it cannot be read"
              f" ({printable(found.reason)}); gatectl route set {printable(model)} writes a"
              " new one", file=context.err)  # fmt: skip
    document = render_rule_set(rules)
    out, output = context.out, getattr(args, "output_format", "table")
    if output == "yaml":
        yaml.safe_dump(document, out, sort_keys=False, allow_unicode=True)
    elif context.emit_json:
        print(json.dumps(document), file=out)
    else:
        rows = [[model, rule.revision, *(routing(rule) or {}).values()]
                for model, rule in sorted(rules.items())]  # fmt: skip
        print_table([["model", "revision", "split", "shadows", "sticky"], *rows], out)
    return EXIT_REJECTED if invalid else EXIT_OK


def apply_rules(args: argparse.Namespace, context: CommandContext) -> int:
    client = context.client
    declared = _read(args.filename, sys.stdin)
    stored, _ = client.rules()
    _check_versions(context, declared)
    results: list[dict[str, Any]] = []
    written: dict[str, int] = {}
    for model, rule in sorted(declared.items()):
        before = stored.get(model)
        result: dict[str, Any] = {
            "model": model, "before": routing(before), "after": routing(rule.rule),
            "revision": None if before is None else before.revision,
        }  # fmt: skip
        if rule.routes_like(before):
            result["result"] = "unchanged"
        elif rule.revision is not None and before is not None and rule.revision != before.revision:
            result["result"] = "conflict"
            result["error"] = (
                f"its rule is at revision {before.revision}, the file's at {rule.revision}:"
                " gatectl get rules, then apply again"
            )
        elif args.dry_run:
            result["result"] = "would change"
        else:
            # Compare-and-set on the revision the diff was made against: the change shown is
            # the change written, or none is.
            expected = rule.revision if rule.revision is not None else (
                0 if before is None else before.revision)  # fmt: skip
            reason = args.reason or f"gatectl apply -f {args.filename}"
            result.update(_write(context, rule, expected, reason))
            if result["result"] == "changed":
                written[model] = result["revision_after"]
        results.append(result)
    _print(results, args.dry_run, context)
    code = EXIT_CONFLICT if any(r["result"] == "conflict" for r in results) else EXIT_OK
    if written and args.wait is not None:
        deadline = time.monotonic() + args.wait
        for model, revision in written.items():
            left = max(0.0, deadline - time.monotonic())
            report = wait_for_revision(client, model, revision, left)
            outcome = print_outcome(report, args.wait, None if context.emit_json else context.out,
                                    context.err, named=True)  # fmt: skip
            code = code or outcome
    return code


def _read(filename: str, stdin: TextIO) -> dict[str, DeclaredRule]:
    """The rule set in `filename` ("-": standard input), checked whole; Rejected names the
    file and the field."""
    try:
        text = stdin.read(MAX_RULE_SET_BYTES + 1) if filename == "-" else (
            Path(filename).read_text(encoding="utf-8"))  # fmt: skip
    except (OSError, UnicodeDecodeError) as exc:
        raise Rejected(f"{filename}: cannot be read: {exc}") from None
    if len(text) > MAX_RULE_SET_BYTES:
        raise Rejected(f"{filename}: larger than {MAX_RULE_SET_BYTES} bytes; not a rule set")
    try:
        return parse_rule_set(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise Rejected(f"{filename}: not YAML or JSON: {exc}") from None
    except SchemaError as exc:
        raise Rejected(f"{filename}: {exc}") from None


def _check_versions(context: CommandContext, declared: dict[str, DeclaredRule]) -> None:
    """Before anything is written: every model and version the file names is registered and
    no version is retired (the write checks again, in its transaction)."""
    models = set(context.client.list_models())
    for model, rule in sorted(declared.items()):
        if model not in models:
            raise NotFound(f"model {model!r} is not registered")
        registered = set(context.client.list_versions(model))
        for version in rule.rule.versions:
            if version not in registered:
                raise NotFound(f"version {version!r} of model {model!r} is not registered")
            if context.client.show_version(model, version).get("status") == "retired":
                raise Rejected(f"version {version!r} of model {model!r} is retired")


def _write(
    context: CommandContext, declared: DeclaredRule, expected_revision: int, reason: str
) -> dict[str, Any]:
    rule = declared.rule
    try:
        written = context.client.set_route(
            rule.model, rule.split, rule.shadows, actor=context.actor, sticky=rule.sticky,
            reason=reason[:MAX_REASON_CHARS], expected_revision=expected_revision,
        )  # fmt: skip
    except Conflict as exc:
        return {"result": "conflict", "error": str(exc)}
    except Rejected as exc:  # the schema gate: this model stays as it was
        return {"result": "refused", "error": str(exc)}
    return {"result": "changed", "revision_after": written.revision}


def _print(results: list[dict[str, Any]], dry_run: bool, context: CommandContext) -> None:
    out = context.out
    if context.emit_json:
        print(json.dumps({"dry_run": dry_run, "models": results}), file=out)
    else:
        rows = [[r["model"], r["result"], _diff(r), r.get("error", "")] for r in results]
        print_table([["model", "result", "change", "why"], *rows], out)
    kinds = ("changed", "would change", "unchanged", "conflict", "refused")
    counts = {kind: sum(1 for r in results if r["result"] == kind) for kind in kinds}
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    note = "; dry run: nothing written" if dry_run else ""
    print(f"{len(results)} model(s): {summary or 'none'}{note}",
          file=context.err if context.emit_json else out)  # fmt: skip
    for result in results:
        if result["result"] in ("conflict", "refused"):
            print(f"gatectl: {printable(result['model'])}: {printable(result['error'])}",
                  file=context.err)  # fmt: skip


def _diff(result: dict[str, Any]) -> str:
    return "; ".join(changes(result["before"], result["after"])) or "-"
