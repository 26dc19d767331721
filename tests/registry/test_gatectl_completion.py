"""`gatectl completion SHELL`: scripts generated from the parser, which a real bash completes
gatectl's commands and flags with; no Redis needed."""

from __future__ import annotations

import io
import subprocess

import pytest

from registry_client.cli.main import main


def _script(shell: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert main(["completion", shell], {}, out, err) == 0  # no Redis given, none needed
    assert err.getvalue() == ""
    return out.getvalue()


def _bash_completes(script: str, line: str) -> set[str]:
    """What bash offers for the last word of `line` (the empty word after a space)."""
    words = line.split() + ([""] if line.endswith(" ") else [])
    program = f"""
{script}
COMP_WORDS=({" ".join(repr(w) for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE={line!r}
COMP_POINT=${{#COMP_LINE}}
_shtab_gatectl gatectl {words[-1]!r} {words[-2]!r}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return {word.strip() for word in done.stdout.splitlines() if word.strip()}


@pytest.fixture(scope="module")
def bash_script() -> str:
    return _script("bash")


@pytest.mark.parametrize(
    ("line", "offered"),
    [
        ("gatectl ro", {"route", "rollout"}),
        ("gatectl route ", {"show", "set", "history", "status", "rollback"}),
        ("gatectl rollout st", {"start", "status"}),
        ("gatectl route show --js", {"--json"}),
        ("gatectl completion ", {"bash", "zsh", "tcsh"}),
    ],
)
def test_bash_completes_commands_and_flags(bash_script, line, offered):
    assert offered <= _bash_completes(bash_script, line)


def test_bash_offers_only_what_matches(bash_script):
    assert _bash_completes(bash_script, "gatectl rou") == {"route"}


@pytest.mark.parametrize(
    ("shell", "marker"), [("zsh", "#compdef gatectl"), ("tcsh", "complete gatectl")]
)
def test_zsh_and_tcsh_scripts_name_gatectl_and_its_commands(shell, marker):
    script = _script(shell)
    assert marker in script
    assert all(command in script for command in ("route", "rollout", "export", "completion"))
