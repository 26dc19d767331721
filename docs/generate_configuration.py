"""Generate docs/configuration.md from the settings' declaration:
`python docs/generate_configuration.py [OUT_FILE]`.

Every setting is declared once, in gateway/settings/declaration.py (the cross-setting rules in
gateway/settings/checks.py); tests/unit/test_configuration_doc.py renders this page again and
compares, so edit the declaration, never the output.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.settings import Settings
from gateway.settings.checks import CHECKS
from gateway.settings.declaration import CONCERNS
from gateway.settings.schema import Concern, Declared, declared

DEFAULT_OUT = Path(__file__).resolve().parent / "configuration.md"
HEADER = """\
# Configuration

<!-- Generated from gateway/settings/ by docs/generate_configuration.py; do not edit. -->

Every setting of `onnxgate serve` comes from its flag, else from its environment variable,
else from its default. An `ONNXGATE_*` variable that is not a setting is refused (exit 2) and
the nearest setting is named, so a misspelt one cannot pass unnoticed. A boolean variable
takes `1`, `true`, `yes` or `on`, and `0`, `false`, `no`, `off` or nothing. A value outside
its bounds, or breaking one of the [rules across settings](#rules-across-settings), is
refused before anything starts (exit 2), naming the flag. `onnxgate serve --help` says the
same per flag.

Under `--workers N` the supervisor hands each worker its settings in these variables.
"""
COLUMNS = ("Setting", "Flag", "Environment variable", "Default", "Bounds", "What it does")


def render() -> str:
    """The whole page."""
    settings = declared(Settings)
    parts = [HEADER, _contents()]
    for concern in CONCERNS:
        parts.append(_section(concern, [s for s in settings if s.spec.concern is concern]))
    parts.append("## Rules across settings\n\n" + "".join(f"- {c.rule}\n" for c in CHECKS))
    return "\n".join(parts)


def _contents() -> str:
    titles = [concern.title for concern in CONCERNS] + ["Rules across settings"]
    return "".join(f"- [{title}](#{_anchor(title)})\n" for title in titles)


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, spaces to dashes, punctuation dropped."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -")
    return kept.replace(" ", "-")


def _section(concern: Concern, settings: list[Declared]) -> str:
    rows = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    rows += ["| " + " | ".join(_cells(setting)) + " |" for setting in settings]
    return f"## {concern.title}\n\n{concern.summary}\n\n" + "\n".join(rows) + "\n"


def _cells(setting: Declared) -> tuple[str, ...]:
    if setting.kind == "bool":
        default = "on" if setting.default else "off"
    else:
        shown = setting.default_shown()
        default = "none" if shown is None else f"`{shown}`"
    choices = setting.spec.choices
    does = _text(setting.spec.help) + (f" (one of {', '.join(choices)})" if choices else "")
    return (f"`{setting.name}`", f"`{setting.flag}`", f"`{setting.env}`", default,
            setting.bounds_shown(), does)  # fmt: skip


def _text(text: str) -> str:
    """Plain text in a table cell: `<name>` must not read as HTML, `|` as a column."""
    return text.replace("|", "\\|").replace("<", "\\<").replace(">", "\\>")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    target.write_text(render(), encoding="utf-8")
    print(target)
