"""gatectl's old spellings, kept for a release as hidden aliases, against a real redis-server:
each says once on stderr that it is deprecated and what to type instead, then does exactly
what the new spelling does; none is listed in --help, the completion scripts, the reference
or the message for an unknown command."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_client.cli.aliases import ALIASES
from registry_client.cli.completion import SHELLS
from registry_client.cli.main import build_parser, main
from registry_client.cli.reference import reference_text
from registry_client.client import RegistryClient
from tests.support.gatectl import run_gatectl
from tests.support.gateways import register_credit
from tests.support.redis_server import RedisServer

RETIRE_NOTICE = (
    "gatectl: `version-status` is deprecated; use `gatectl version retire MODEL VERSION`\n"
)


@pytest.fixture
def url(redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    """Model credit with versions 1 and 2, all traffic on 1 (2 at weight 0)."""
    client = RegistryClient.from_url(redis_server.url)
    register_credit(client, tmp_path)
    client.close()
    yield redis_server.url


def _retire_two_away_from_the_rule(url: str) -> None:
    assert run_gatectl(url, "route", "set", "credit", "--split", "1=100", "--no-wait")[0] == 0


def _audit_actions(url: str) -> list[str]:
    entries = json.loads(run_gatectl(url, "--json", "route", "history", "credit")[1])
    return [entry["action"] for entry in entries]


def test_version_status_retired_notes_the_new_spelling_then_retires(url):
    _retire_two_away_from_the_rule(url)
    code, out, err = run_gatectl(url, "version-status", "credit", "2", "retired")
    assert (code, out, err) == (0, "credit version 2: retired\n", RETIRE_NOTICE)
    assert _audit_actions(url)[0] == "version.retire"
    versions = json.loads(run_gatectl(url, "--json", "versions", "credit")[1])
    assert [v["status"] for v in versions] == ["registered", "retired"]
    # the new spelling now finds it retired already: the same write was made
    assert run_gatectl(url, "version", "retire", "credit", "2") == (
        0, "credit version 2: retired already\n", "")  # fmt: skip


def test_version_status_registered_is_version_unretire(url):
    _retire_two_away_from_the_rule(url)
    assert run_gatectl(url, "version", "retire", "credit", "2")[0] == 0
    code, out, err = run_gatectl(url, "version-status", "credit", "2", "registered")
    assert (code, out) == (0, "credit version 2: registered\n")
    assert err == (
        "gatectl: `version-status` is deprecated; use `gatectl version unretire MODEL VERSION`\n"
    )
    assert _audit_actions(url)[0] == "version.unretire"


def test_an_alias_is_refused_as_its_new_spelling_is(url):
    # version 2 is in the rule (weight 0): retiring it is refused, spelled either way
    old = run_gatectl(url, "version-status", "credit", "2", "retired")
    new = run_gatectl(url, "version", "retire", "credit", "2")
    assert old[0] == new[0] == 1
    assert old[2] == RETIRE_NOTICE + new[2] and "route it away first" in new[2]


def test_global_options_before_an_alias_still_apply(url, redis_server, tmp_path):
    client = RegistryClient.from_url(redis_server.url, "team")
    register_credit(client, tmp_path)
    client.close()
    code, _, err = run_gatectl(url, "--namespace", "team", "version-status", "credit", "2",
                               "retired")  # fmt: skip
    assert code == 1 and "version '2' of model 'credit' is in its rule" in err
    assert run_gatectl(url, "--namespace", "elsewhere", "version-status", "credit", "2",
                       "retired")[2].endswith("is not registered\n")  # fmt: skip


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("serving", "argument STATUS: 'serving' is no longer set by hand: a version serves"),
        ("gone", "argument STATUS: expected registered or retired, got 'gone'"),
    ],
)
def test_a_status_the_alias_cannot_spell_is_a_usage_error(url, capsys, status, message):
    with pytest.raises(SystemExit) as exited:
        run_gatectl(url, "version-status", "credit", "2", status)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def _completion(shell: str) -> str:
    out = io.StringIO()
    assert main(["completion", shell], {}, out, io.StringIO()) == 0
    return out.getvalue()


@pytest.mark.parametrize("alias", [alias.name for alias in ALIASES])
def test_aliases_are_hidden_from_help_completion_and_the_reference(alias, capsys):
    parser = build_parser()
    assert "version" in parser.format_help() and alias not in parser.format_help()
    assert alias not in parser.format_usage()
    for shell in SHELLS:
        script = _completion(shell)
        assert "rollout" in script and alias not in script, shell
    assert alias not in reference_text()
    with pytest.raises(SystemExit):
        main(["no-such-command"], {}, io.StringIO(), io.StringIO())
    said = capsys.readouterr().err
    assert "invalid choice: 'no-such-command' (choose from 'models'," in said
    assert alias not in said
