"""gatectl's habits borrowed from kubectl: output flags anywhere on the command line, and
--version on both commands."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from gateway.cli import main as onnxgate
from registry_client.cli.aliases import ALIASES
from registry_client.cli.main import build_parser as gatectl_parser
from registry_client.cli.main import main as gatectl
from registry_client.client import RegistryClient
from tests.support.gatectl import run_gatectl
from tests.support.gateways import register_credit


@pytest.fixture
def url(redis_server, tmp_path: Path) -> Iterator[str]:
    client = RegistryClient.from_url(redis_server.url)
    register_credit(client, tmp_path)
    client.close()
    yield redis_server.url


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "route", "show", "credit"],
        ["route", "--json", "show", "credit"],
        ["route", "show", "--json", "credit"],
        ["route", "show", "credit", "--json"],
        ["-o", "json", "route", "show", "credit"],
        ["route", "show", "credit", "-o", "json"],
        ["route", "-o", "json", "show", "credit"],
        ["-o", "table", "route", "show", "credit", "--json"],
    ],
)
def test_json_is_asked_for_anywhere_on_the_command_line(url, argv):
    code, out, err = run_gatectl(url, *argv)
    assert (code, err) == (0, "")
    assert json.loads(out)["revision"] == 1
    assert out == run_gatectl(url, "--json", "route", "show", "credit")[1]


@pytest.mark.parametrize(
    "argv",
    [["versions", "credit"], ["models"], ["route", "history", "credit"]],
)
def test_output_flags_after_the_arguments_of_other_commands(url, argv):
    at_start = run_gatectl(url, "--json", *argv)
    at_end = run_gatectl(url, *argv, "-o", "json")
    assert at_start[0] == at_end[0] == 0
    json.loads(at_end[1])
    assert at_start[1] == at_end[1]
    table = run_gatectl(url, *argv, "-o", "table")
    assert table == run_gatectl(url, *argv) and not table[1].lstrip().startswith(("{", "["))


def test_an_unknown_output_format_is_a_usage_error(url, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_gatectl(url, "route", "show", "credit", "-o", "xml")
    assert exit_info.value.code == 2
    assert "argument -o: invalid choice: 'xml' (choose from 'table', 'json', 'yaml')" in (
        capsys.readouterr().err
    )


def test_gatectl_and_onnxgate_say_their_version(capsys):
    version = metadata.version("onnxgate")
    with pytest.raises(SystemExit) as exit_info:
        gatectl(["--version"], {}, io.StringIO(), io.StringIO())
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"gatectl {version}\n"
    with pytest.raises(SystemExit) as exit_info:
        onnxgate(["--version"], {})
    assert exit_info.value.code == 0
    said = capsys.readouterr().out
    assert said.startswith(f"onnxgate {version} (onnxruntime {metadata.version('onnxruntime')},")


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("gatectl",)
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, bool]]:
    """Every command and subcommand: its words, its parser, whether its parent lists it with a
    help line."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, name in helped
                yield from _commands(sub, (*path, name))


def test_every_command_says_what_it_does_its_environment_and_exit_codes(capsys):
    parser = gatectl_parser()
    commands = list(_commands(parser))
    assert len(commands) > 30
    hidden = {("gatectl", alias.name) for alias in ALIASES}  # old spellings, unlisted on purpose
    assert [words for words, _, helped in commands if not helped and words not in hidden] == []
    for words, sub, _ in [(("gatectl",), parser, True), *commands]:
        text = sub.format_help()
        assert "ONNXGATE_REDIS_URL" in text and "exit codes:" in text, words
        assert "4  Redis unreachable" in text, words
    assert "holds the logic" not in parser.format_help()
