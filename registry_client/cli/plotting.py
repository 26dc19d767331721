"""`--plot FILE.svg`: the picture of what a command printed, drawn with registry_client.charts
and written whole (to a temporary file beside it, then renamed), so a reader never sees half
a chart."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import TextIO

from registry_client.cli.tables import printable
from registry_client.errors import Rejected

__all__ = ["add_plot_argument", "write_plot"]


def add_plot_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--plot", type=Path, metavar="FILE.svg",
                        help=f"also draw {what} into an SVG file")  # fmt: skip


def write_plot(path: Path, svg: str, err: TextIO) -> None:
    """Write `svg` to `path` and say so on `err` (standard output keeps the table or JSON);
    Rejected naming the path when it cannot be written."""
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(svg)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise Rejected(f"--plot {path}: cannot be written: {exc.strerror}") from None
    print(f"wrote {printable(str(path))}", file=err)
