"""The committed stubs in gateway/_proto are exactly what protos/ generates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generate_module():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "protos" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_stubs_are_fresh(tmp_path):
    written = _generate_module().generate(tmp_path)
    committed = ROOT / "gateway" / "_proto"
    assert sorted(p.name for p in written) == sorted(
        p.name for p in committed.iterdir() if p.suffix in {".py", ".pyi"}
    )
    stale = [p.name for p in written if p.read_bytes() != (committed / p.name).read_bytes()]
    assert stale == [], f"run `python protos/generate.py`: stale {stale}"
