"""docs/gatectl-reference.md is gatectl's parser written out: the committed file is what the
generator writes now, whatever the terminal's width, and it holds every command gatectl
lists with its usage, arguments, defaults and the epilog."""

from __future__ import annotations

import subprocess
import sys

from registry_client.cli.main import build_parser
from registry_client.cli.reference import reference_text
from tests.support.gateways import REPO_ROOT

REFERENCE = REPO_ROOT / "docs" / "gatectl-reference.md"
REGENERATE = "run python -m registry_client.cli.reference > docs/gatectl-reference.md"


def test_the_committed_reference_is_what_the_parser_generates():
    assert REFERENCE.read_text() == reference_text(), REGENERATE


def test_the_reference_does_not_depend_on_the_terminals_width(monkeypatch):
    usages, references = set(), set()
    for columns in ("40", "250"):
        monkeypatch.setenv("COLUMNS", columns)  # argparse wraps its help at $COLUMNS
        usages.add(build_parser().format_usage())
        references.add(reference_text())
    assert len(usages) == 2  # gatectl --help does follow the terminal
    assert references == {REFERENCE.read_text()}, REGENERATE


def test_the_module_prints_the_reference():
    done = subprocess.run([sys.executable, "-m", "registry_client.cli.reference"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert done.stdout == reference_text()


def test_every_listed_command_has_its_section_usage_and_options():
    text = reference_text()
    for heading in ("## gatectl", "## gatectl route set", "## gatectl rollout start",
                    "## gatectl get rules", "## gatectl restore"):  # fmt: skip
        assert f"\n{heading}\n" in text, heading
    assert "usage: gatectl route set [-h] [-o {table,json,yaml}] [--json]" in text
    assert "| `--split SPLIT` | VERSION=WEIGHT,... (weights 0 to 10000) | required |" in text
    assert "| `--interval INTERVAL` | judged interval per step: 30s, 5m, 1h (5m) | 5m |" in text
    assert "| `--dry-run` | check everything and show what would change; write nothing |" in text
    assert "- [gatectl rollout abort](#gatectl-rollout-abort): end it" in text
    assert "exit codes:\n  0  done" in text and "ONNXGATE_REDIS_URL" in text
