"""`gatectl version show MODEL VERSION` and `gatectl lineage MODEL VERSION`: a version's whole
record for a reviewer or an auditor, and the chain of versions it descends from."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.tables import print_table, printable
from registry_client.versions.lineage import lineage_chain
from registry_client.versions.record import version_record

__all__ = ["add_parsers", "show_version"]

_LINEAGE_COLUMNS = ("data", "data_sha256", "code", "run")


def add_parsers(commands: Commands) -> None:
    """Add `lineage` to gatectl's subcommands (`version show` is added with `version`)."""
    lineage = commands.add_parser(
        "lineage", help="a version and its ancestors: data, data hashes, code revisions"
    )
    lineage.add_argument("model")
    lineage.add_argument("version")
    lineage.set_defaults(handler=show_lineage)


def show_lineage(args: argparse.Namespace, context: CommandContext) -> int:
    client = context.client
    client.show_version(args.model, args.version)  # NotFound when not registered
    chain = lineage_chain(client.show_version, args.model, args.version)
    if context.emit_json:
        print(json.dumps(chain), file=context.out)
    else:
        _print_chain(chain, context.out)
    return EXIT_OK


def show_version(args: argparse.Namespace, context: CommandContext) -> int:
    record = version_record(context.client, args.model, args.version)
    if context.emit_json:
        print(json.dumps(record), file=context.out)
        return EXIT_OK
    out = context.out
    status = record["status"]
    print(f"{printable(record['model'])} version {printable(record['version'])}:"
          f" {status['status']} since {printable(status['since'] or '-')}"
          f" ({status['applied']} of {status['replicas']} live replicas apply the rule)",
          file=out)  # fmt: skip
    artifact = record["artifact"]
    _section("artifact", out)
    print_table([["field", "value"], *artifact.items(),
                 ["description", record["description"] or "-"],
                 ["tags", ",".join(record["tags"]) or "-"]], out)  # fmt: skip
    _section("onnx", out)
    _print_onnx(record["onnx"], out)
    _section("signature", out)
    _print_signature(record["signature"] or {}, record["feature_names"] or {}, out)
    _section("card", out)
    if record["card"]:
        print_table([["field", "value"], *_flatten(record["card"], "")], out)
    else:
        print("(none: gatectl register --card FILE)", file=out)
    _section("lineage", out)
    _print_chain(record["lineage"], out)
    _section("metrics", out)
    rows = [[m["at"], m["source"], m["by"],
             " ".join(f"{k}={v:g}" for k, v in sorted(m["values"].items()))]
            for m in record["metrics"]]  # fmt: skip
    print_table([["at", "source", "by", "values"], *rows], out) if rows else print(
        "(none)", file=out
    )
    _section("evaluation", out)
    _print_evaluation(record["evaluation"], out)
    _section("deployment history", out)
    rows = [[h["when"], h["who"], h["action"], h["place"], h["rule"], h["reason"]]
            for h in record["history"]]  # fmt: skip
    print_table([["when", "who", "action", "place after", "rule", "reason"], *rows], out)
    return EXIT_OK


def _section(title: str, out: TextIO) -> None:
    print(f"\n{title}", file=out)


def _print_onnx(facts: dict[str, Any] | None, out: TextIO) -> None:
    if not facts:
        print("(not read: registered before ONNX facts were stored)", file=out)
        return
    opsets = " ".join(f"{d}={v}" for d, v in sorted(facts.get("opset_imports", {}).items()))
    metadata = " ".join(f"{k}={v}" for k, v in sorted(facts.get("metadata_props", {}).items()))
    print_table([
        ["field", "value"],
        ["producer", f"{facts.get('producer_name') or '-'} {facts.get('producer_version') or ''}"],
        ["ir_version", facts.get("ir_version", "-")], ["opsets", opsets or "-"],
        ["model_version", facts.get("model_version", "-")],
        ["graph", facts.get("graph_name") or "-"], ["domain", facts.get("domain") or "-"],
        ["doc_string", (facts.get("doc_string") or "-").replace("\n", " ")[:200]],
        ["metadata", metadata or "-"],
    ], out)  # fmt: skip


def _print_signature(signature: dict[str, Any], names: dict[str, list[str]], out: TextIO) -> None:
    rows = []
    for kind in ("inputs", "outputs"):
        for tensor in signature.get(kind, []):
            features = ",".join(names.get(tensor["name"], [])) if kind == "inputs" else ""
            rows.append([kind[:-1], tensor["name"], tensor["type"], tensor["shape"],
                         features or "-"])  # fmt: skip
    print_table([["", "name", "type", "shape", "feature names"], *rows], out)


def _print_chain(chain: list[dict[str, str]], out: TextIO) -> None:
    rows = [[c["model"], c["version"], c.get("missing") or c.get("sha256", "")[:12],
             c.get("created_at", "-"), *(c.get(k, "-") for k in _LINEAGE_COLUMNS)]
            for c in chain]  # fmt: skip
    print_table([["model", "version", "sha256", "registered", *_LINEAGE_COLUMNS], *rows], out)


def _print_evaluation(evaluation: dict[str, Any] | None, out: TextIO) -> None:
    if evaluation is None:
        print("(none: gatectl evaluate)", file=out)
        return
    metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(evaluation["metrics"].items())
                       if isinstance(v, int | float))  # fmt: skip
    print_table([["field", "value"], ["rows", evaluation["rows"]],
                 ["task", evaluation["task"]], ["data sha256", evaluation["data_sha256"]],
                 ["metrics", metrics or "-"],
                 ["segments", ",".join(sorted(evaluation.get("segments", {}))) or "-"]],
                out)  # fmt: skip


def _flatten(value: Any, prefix: str) -> list[list[str]]:
    """Card fields as dotted rows: training_data.time_range.start."""
    if isinstance(value, dict):
        rows = []
        for key, inner in value.items():
            rows.extend(_flatten(inner, f"{prefix}.{key}" if prefix else key))
        return rows
    if isinstance(value, list):
        return [[prefix, ",".join(str(v) for v in value) or "-"]]
    return [[prefix, str(value).replace("\n", " ")]]
