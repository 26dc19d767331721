"""Operators' strings are data: gatectl refuses control characters and over-long text where it
writes them, bounds weights, holds every name to one rule, and escapes whatever it prints that
it read from Redis (another tool, or a hand, may have written anything there)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import redis
from redis.typing import EncodableT, FieldT

from registry_client.cli.main import main
from registry_client.cli.tables import printable
from registry_client.client import RegistryClient
from registry_client.errors import Rejected
from registry_client.records.rule_documents import RouteRule, Split
from registry_client.schema import SchemaError, is_unsafe_character
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl as _gatectl
from tests.support.redis_server import RedisServer

ESCAPES = "\x1b]0;owned\x07\x1b[2J\rok\u202edesrever"  # title, bell, clear, CR, RTL override
ROUTE_KEY, AUDIT_KEY = "{onnxgate}:route:credit", "{onnxgate}:audit:credit"


@pytest.fixture
def url(redis_server: RedisServer, tmp_path: Path) -> str:
    """Model credit with versions 1 and 2; no rule yet."""
    for version in ("1", "2"):
        path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", version)
        flags = ["--create-model"] if version == "1" else []
        assert _gatectl(redis_server.url, "register", "credit", version, str(path), *flags)[0] == 0
    return str(redis_server.url)


def _usage_error(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> str:
    """Run gatectl expecting argparse's usage error (exit 2); returns what it printed."""
    with pytest.raises(SystemExit) as exited:
        main(["--redis-url", url, *argv], {}, io.StringIO(), io.StringIO())
    assert exited.value.code == 2
    return capsys.readouterr().err


def _terminal_safe(text: str) -> bool:
    return not any(is_unsafe_character(c) for c in text.replace("\n", ""))


@pytest.mark.parametrize(
    ("reason", "shown"),
    [
        ("rollback \x1b[31mnow", "'\\x1b' (U+001B) at character 10"),
        ("done\x07", "'\\x07' (U+0007) at character 5"),
        ("a\rb", "'\\r' (U+000D) at character 2"),
        ("two\nlines", "'\\n' (U+000A) at character 4"),
        ("fix \u202eenilno", "'\\u202e' (U+202E) at character 5"),
    ],
)
def test_control_characters_in_a_reason_are_refused_naming_the_flag(
    url: str, capsys: pytest.CaptureFixture[str], reason: str, shown: str
) -> None:
    err = _usage_error(capsys, url, "--actor", "alice", "route", "set", "credit", "--split",
                       "1=100", "--reason", reason)  # fmt: skip
    assert "argument --reason: expected text without control or format characters" in err
    assert shown in err
    assert _terminal_safe(err)
    assert _gatectl(url, "route", "show", "credit")[0] == 1  # nothing was written


def test_control_characters_in_an_actor_are_refused(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _usage_error(capsys, url, "--actor", "mallory\x1b[8m", "route", "set", "credit",
                       "--split", "1=100")  # fmt: skip
    assert "argument --actor: expected text without control or format characters, got" in err
    assert "'\\x1b' (U+001B) at character 8" in err


def test_an_actor_of_5000_characters_is_refused(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _usage_error(capsys, url, "--actor", "a" * 5000, "model", "create", "credit")
    assert "argument --actor: expected at most 100 characters, got 5000" in err


def test_a_reason_over_500_characters_is_refused_and_500_are_kept(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _usage_error(capsys, url, "--actor", "alice", "route", "set", "credit", "--split",
                       "1=100", "--reason", "x" * 501)  # fmt: skip
    assert "argument --reason: expected at most 500 characters, got 501" in err
    assert (
        _gatectl(url, "route", "set", "credit", "--split", "1=100", "--reason", "x" * 500)[0] == 0
    )


def test_a_login_name_with_control_characters_is_refused_without_actor(url: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--redis-url", url, "model", "create", "credit"], {"USER": "root\x1b[2J"},
                out, err)  # fmt: skip
    assert code == 2
    assert "the login name (the default --actor): expected text without control" in (err.getvalue())
    assert _terminal_safe(err.getvalue())


def test_text_in_other_scripts_and_emoji_is_kept_as_written(url: str) -> None:
    # Persian "mi-khaham" needs the zero-width non-joiner; emoji sequences need the joiner.
    reason = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \u56de\u6eda 👩\u200d💻"
    code, out, err = _gatectl(url, "route", "set", "credit", "--split", "1=100", "--reason", reason)
    assert (code, err) == (0, "gatectl: note: no live gateway; revision 1 of credit is stored"
                              " and gateways apply it as they start\n")  # fmt: skip
    assert out.splitlines()[-1].endswith(f": {reason}")


def test_the_library_refuses_what_gatectl_refuses(url: str) -> None:
    client = RegistryClient.from_url(url)
    try:
        with pytest.raises(Rejected, match=r"reason: expected text without control"):
            client.set_route("credit", [Split("1", 100)], actor="ops", reason="ok\x1b[2J")
        with pytest.raises(Rejected, match=r"reason: expected at most 500 characters"):
            client.set_route("credit", [Split("1", 100)], actor="ops", reason="x" * 501)
        assert client.get_route("credit") is None
    finally:
        client.close()


def test_a_rule_written_past_gatectl_is_read_and_shown_escaped(url: str) -> None:
    by_hand = redis.Redis.from_url(url)
    document = {"model": "credit", "revision": 7, "split": [{"version": "1", "weight": 100}],
                "updated_by": "mallory\x1b[8m", "updated_at": "now\r",
                "reason": ESCAPES}  # fmt: skip
    by_hand.set(ROUTE_KEY, json.dumps(document))
    by_hand.close()
    # Gateways apply it (a rule is not refused for its comment); a write of it is refused.
    stored = RouteRule.from_json(json.dumps(document))
    with pytest.raises(SchemaError, match="reason: expected text without control"):
        stored.validate()
    code, out, _ = _gatectl(url, "route", "show", "credit")
    assert code == 0
    assert _terminal_safe(out)
    assert "updated by mallory\\x1b[8m at now\\x0d: " in out
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x0dok\\u202edesrever" in out
    code, out, _ = _gatectl(url, "--json", "route", "show", "credit")
    assert code == 0 and out.isascii() and _terminal_safe(out)
    assert json.loads(out)["reason"] == ESCAPES


def test_history_shows_audit_entries_escaped(url: str) -> None:
    by_hand = redis.Redis.from_url(url)
    by_hand.xadd(AUDIT_KEY, {"who": "eve\x1b[2J", "when": "\x07", "action": "route.set\r",
                             "model": "credit", "before": "", "after": "{not json",
                             "reason": ESCAPES})  # fmt: skip
    by_hand.close()
    code, out, _ = _gatectl(url, "route", "history", "credit")
    assert code == 0 and _terminal_safe(out)
    row = out.splitlines()[1]  # newest first
    assert row.split()[:4] == ["\\x07", "eve\\x1b[2J", "route.set\\x0d", "?"]
    assert row.endswith(printable(ESCAPES))
    code, out, _ = _gatectl(url, "--json", "route", "history", "credit")
    assert code == 0 and out.isascii()
    assert json.loads(out)[0]["reason"] == ESCAPES


def test_route_status_shows_what_a_heartbeat_reports_escaped(url: str) -> None:
    by_hand = redis.Redis.from_url(url)
    beat: dict[FieldT, EncodableT] = {"applied": json.dumps({"credit": 1}), "targets": "{}",
            "versions": json.dumps(["credit:1:READY", "credit:2:FAILED"]), "loading": "{}",
            "memory": "{}", "failed": json.dumps({"credit:2": "bad \x1b[5mblink"}),
            "errors": "{}"}  # fmt: skip
    by_hand.hset("{onnxgate}:gateway:gw\x1b[2J", mapping=beat)
    by_hand.expire("{onnxgate}:gateway:gw\x1b[2J", 60)
    by_hand.close()
    code, out, _ = _gatectl(url, "route", "status", "credit")
    assert code == 0 and _terminal_safe(out)
    (row,) = [line for line in out.splitlines() if line.startswith("gw")]
    assert row.startswith("gw\\x1b[2J  1")
    assert row.endswith("2: bad \\x1b[5mblink")


def test_rollout_status_shows_a_hand_edited_document_escaped(url: str) -> None:
    assert _gatectl(url, "route", "set", "credit", "--split", "1=100")[0] == 0
    assert _gatectl(url, "rollout", "start", "credit", "--candidate", "2")[0] == 0
    by_hand = redis.Redis.from_url(url)
    document = json.loads(by_hand.get("{onnxgate}:rollout:credit") or b"")
    document["started_by"] = "eve\x1b[2J"
    document["last_decision"] = {"at": 0, "decision": "hold\x07", "reason": ESCAPES}
    by_hand.set("{onnxgate}:rollout:credit", json.dumps(document))
    by_hand.close()
    code, out, _ = _gatectl(url, "rollout", "status", "credit")
    assert code == 0 and _terminal_safe(out)
    assert " by eve\\x1b[2J  leader -" in out
    assert f"hold\\x07: {printable(ESCAPES)}" in out


def test_a_weight_of_10_to_the_23_is_refused_naming_version_and_bound(url: str) -> None:
    code, _, err = _gatectl(url, "route", "set", "credit", "--split", f"1=1,2={10**23}")
    assert code == 1
    assert (f"split[1].weight: expected >= 0 and <= 10000, got {10**23} for version '2'") in err
    assert _gatectl(url, "route", "show", "credit")[0] == 1  # nothing was written
    code, out, _ = _gatectl(url, "route", "set", "credit", "--split", "1=10000,2=1")
    assert code == 0 and "revision 1" in out


def test_a_weight_that_is_not_a_whole_number_is_a_usage_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _usage_error(capsys, url, "route", "set", "credit", "--split", f"1=1,2={'9' * 5000}")
    assert "--split: weight of '2' must be an integer from 0 to 10000" in err
    assert len(err) < 1000


def test_a_stored_rule_with_a_weight_over_the_bound_is_refused_by_readers(url: str) -> None:
    by_hand = redis.Redis.from_url(url)
    by_hand.set(ROUTE_KEY, json.dumps({"model": "credit", "revision": 3,
                                       "split": [{"version": "1", "weight": 10**23}]}))  # fmt: skip
    by_hand.close()
    code, _, err = _gatectl(url, "route", "show", "credit")
    assert code == 1
    assert "unreadable document in the registry: split[0].weight: expected >= 0 and <= 10000" in err


@pytest.mark.parametrize("version", ["7", "42", "v2.1-rc_1", "2026.06.01", "A" * 128])
def test_version_names_of_the_rule_are_registered(url: str, tmp_path: Path, version: str) -> None:
    path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path / "more", "credit", "x")
    code, out, err = _gatectl(url, "register", "credit", version, str(path))
    assert (code, err) == (0, "")
    assert out.startswith(f"registered credit version {version} sha256 ")


@pytest.mark.parametrize(
    "version", ["../x", "a/b", "v1..2", "-1", ".1", "a b", "1:2", "é", "\x1b", "A" * 129, ""]
)
def test_version_names_outside_the_rule_are_refused_stating_it(
    url: str, tmp_path: Path, version: str
) -> None:
    path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path / "more", "credit", "x")
    code, _, err = _gatectl(url, "register", "credit", version, str(path))
    assert code == 1
    assert f"version {version!r} is not valid: expected 1 to 128 characters from A-Z a-z 0-9" in (
        err
    )
    assert _terminal_safe(err)
    if version:  # an empty name is no NAME=VALUE pair in --split: argparse refuses that
        code, _, err = _gatectl(url, "route", "set", "credit", "--split", f"1=1,{version}=1")
        assert code == 1 and f"split[1].version {version!r} is not valid" in err


def test_lineage_without_name_value_pairs_is_a_usage_error(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "scoring", "1")
    err = _usage_error(capsys, url, "register", "scoring", "1", str(path), "--create-model",
                       "--lineage", "oops")  # fmt: skip
    assert "--lineage: expected NAME=VALUE, got 'oops'" in err
    assert "scoring" not in _gatectl(url, "models")[1]  # nothing was created


def test_a_redis_url_of_an_unknown_scheme_is_a_usage_error_that_hides_the_url() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--redis-url", "http://user:s3cret@host/0", "models"], {}, out, err)
    assert code == 2
    assert err.getvalue().startswith("gatectl: --redis-url: ") and "s3cret" not in err.getvalue()
