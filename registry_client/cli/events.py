"""`gatectl events MODEL`: the quality events the rollout leader sent for a model (accuracy
drops, fairness gaps, drift alerts and their resolutions), read back from the audit, and the
episodes open now."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping

from registry_client.cli.context import CommandContext, Commands
from registry_client.cli.durations import duration_argument, format_duration
from registry_client.cli.exit_codes import EXIT_OK
from registry_client.cli.formatting import iso_time
from registry_client.cli.tables import print_table, printable
from registry_client.quality.episode_store import EpisodeStore

__all__ = ["add_parsers"]


def add_parsers(commands: Commands) -> None:
    """Add `events` to gatectl's subcommands."""
    events = commands.add_parser(
        "events", help="quality events: accuracy drops, fairness gaps, drift alerts"
    )
    events.add_argument("model")
    events.add_argument("--since", type=duration_argument, default=86400.0,
                        help="how far back (1d; at most 7d)")  # fmt: skip
    events.set_defaults(handler=list_events)


def _subject(payload: Mapping[str, object]) -> str:
    """What the event is about beyond its version and role: the metric, the segment
    dimension and its worst value, or the drifting features."""
    kind = payload.get("kind")
    if kind == "fairness":
        return f"{payload.get('dimension', '')} (worst {payload.get('worst', '-')})"
    if kind == "drift":
        features = payload.get("features")
        named = [str(f.get("feature")) for f in features if isinstance(f, dict)] if isinstance(
            features, list) else []  # fmt: skip
        return ", ".join(named[:3]) or "-"
    return str(payload.get("metric", "-"))


def list_events(args: argparse.Namespace, context: CommandContext) -> int:
    store = EpisodeStore(context.client)
    found = store.events(args.model, args.since, time.time())
    open_now = [
        {"kind": s.kind, "version": s.version, "role": s.role, "dimension": s.dimension,
         "episode": e.id, "since": iso_time(e.since)}
        for s, e in sorted(store.episodes(args.model).items()) if e.open
    ]  # fmt: skip
    if context.emit_json:
        print(json.dumps({"model": args.model, "since_seconds": args.since, "events": found,
                          "open": open_now}), file=context.out)  # fmt: skip
        return EXIT_OK
    out = context.out
    print(f"model {printable(args.model)}  events in the last {format_duration(args.since)}:"
          f" {len(found)}  open episodes: {len(open_now)}", file=out)  # fmt: skip
    rows: list[list[object]] = [["when", "event", "version", "role", "about", "reason"]]
    for event in found:
        payload = event["payload"]
        assert isinstance(payload, dict)
        rows.append([event["when"], event["event"], payload.get("version", ""),
                     payload.get("role", ""), _subject(payload), event["reason"]])  # fmt: skip
    if found:
        print_table(rows, out)
    if open_now:
        print("open:", file=out)
        table: list[list[object]] = [["kind", "version", "role", "dimension", "since", "episode"]]
        table += [[o["kind"], o["version"], o["role"], o["dimension"], o["since"], o["episode"]]
                  for o in open_now]  # fmt: skip
        print_table(table, out)
    return EXIT_OK
