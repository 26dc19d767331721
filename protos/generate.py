"""Generate gateway/_proto from protos/*.proto: `python protos/generate.py [OUT_DIR]`.

protoc emits top-level imports (`import model_config_pb2`); they are rewritten to package
imports so the stubs live inside `gateway._proto`. tests/unit/test_proto_fresh.py regenerates into
a temporary folder and compares, so edit the .proto files, never the output.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_DIR.parent / "gateway" / "_proto"
PACKAGE = "gateway._proto"
HEADER = '"""Generated from protos/ by protos/generate.py; do not edit."""\n'
_TOP_LEVEL_IMPORT = re.compile(r"^import (\w+_pb2(?:_grpc)?) as (\w+)$", re.MULTILINE)
_FROM_IMPORT = re.compile(r"^from (\w+_pb2) import", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every proto into out_dir and return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.name) for p in PROTO_DIR.glob("*.proto"))
    plugins = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"--proto_path={PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = sorted(p for p in out_dir.iterdir() if p.suffix in {".py", ".pyi"})
    for path in written:
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        text = _TOP_LEVEL_IMPORT.sub(rf"from {PACKAGE} import \1 as \2", text)
        text = _FROM_IMPORT.sub(rf"from {PACKAGE}.\1 import", text)
        path.write_text(text)
    (out_dir / "__init__.py").write_text(HEADER)
    return [*written, out_dir / "__init__.py"]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for file in generate(target):
        print(file)
