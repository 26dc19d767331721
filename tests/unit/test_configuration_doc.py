"""docs/configuration.md is exactly what the settings' declaration generates."""

from __future__ import annotations

import importlib.util
from dataclasses import fields
from types import ModuleType

from gateway.settings import Settings, env_variable
from tests.support.gateways import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "configuration.md"


def _generate_module() -> ModuleType:
    path = REPO_ROOT / "docs" / "generate_configuration.py"
    spec = importlib.util.spec_from_file_location("generate_configuration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_page_is_fresh():
    rendered = _generate_module().render()
    assert PAGE.read_text(encoding="utf-8") == rendered, (
        "run `python docs/generate_configuration.py`: docs/configuration.md is stale"
    )


def test_the_page_names_every_setting_its_flag_and_variable_once():
    rows = [line for line in PAGE.read_text(encoding="utf-8").splitlines()
            if line.startswith("| `")]  # fmt: skip
    assert sorted(row.split(" | ")[0].strip("| `") for row in rows) == sorted(
        f.name for f in fields(Settings)
    )
    for row in rows:
        name = row.split(" | ")[0].strip("| `")
        assert f"`{env_variable(name)}`" in row
    assert "| `tls_cert_file` | `--tls-cert` |" in "\n".join(rows)
