"""gatectl run in-process, as an operator named alice runs it."""

from __future__ import annotations

import io

from registry_client.cli.main import main


def run_gatectl(url: str, *argv: str) -> tuple[int, str, str]:
    """Exit code, standard output and standard error of `gatectl --redis-url URL ARGV`."""
    out, err = io.StringIO(), io.StringIO()
    code = main(["--redis-url", url, "--actor", "alice", *argv], {}, out, err)
    return code, out.getvalue(), err.getvalue()
