"""The tree is the architecture: one folder per concern, small modules, and no pointers to
documents or trackers outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.gateways import REPO_ROOT

MAX_MODULE_LINES = 300
GENERATED = ("gateway/_proto/",)
# How many modules a package's root may hold before its concerns need folders of their own.
MAX_ROOT_MODULES = {"gateway": 8, "registry_client": 6}


def tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z", *patterns], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    return [REPO_ROOT / name for name in listed.split("\0") if name]


def package_modules() -> list[Path]:
    return [p for p in tracked("gateway/*.py", "registry_client/*.py")
            if not p.relative_to(REPO_ROOT).as_posix().startswith(GENERATED)]  # fmt: skip


def test_no_package_module_is_over_the_line_limit() -> None:
    too_long = {
        p.relative_to(REPO_ROOT).as_posix(): lines
        for p in package_modules()
        if (lines := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


def test_package_roots_hold_few_modules() -> None:
    for package, limit in MAX_ROOT_MODULES.items():
        modules = sorted(p.name for p in (REPO_ROOT / package).glob("*.py"))
        assert len(modules) <= limit, f"{package}/ holds {modules}"


def test_every_package_folder_is_a_package() -> None:
    folders = {p.parent for p in package_modules()}
    assert [f for f in folders if not (f / "__init__.py").is_file()] == []


def test_nothing_points_to_a_design_sketch_or_an_issue_number() -> None:
    # A comment explains the code, not its history; the design lives in docs/.
    pointer = re.compile(r"DESIGN\.md|\bDESIGN's\b|\b[Ii]ssues? #?\d+\b")
    files = [p for p in tracked() if p.suffix in {".py", ".md", ".toml", ".sh"} or
             p.name in {"Dockerfile", "run"}]  # fmt: skip
    found = [
        f"{p.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for p in files
        if p.is_file()
        for number, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if pointer.search(line) and p != Path(__file__)
    ]
    assert found == []
