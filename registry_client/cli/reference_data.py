"""What a reference profile is built from: a version's numeric inputs read from a file (.npz,
.npy or .csv, large CSV files with a progress bar), or its recent traffic's sketches."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import numpy as np

from registry_client.client import RegistryClient
from registry_client.drift.features import feature_columns
from registry_client.drift.reference import FeatureReference
from registry_client.errors import NotFound, Rejected

__all__ = [
    "PROGRESS_FROM_BYTES",
    "load_reference_data",
    "reference_from_traffic",
    "references_from_data",
]

_CHUNK_BYTES = 8 * 1024 * 1024
PROGRESS_FROM_BYTES = 32 * 1024 * 1024  # smaller files load too fast to need a progress bar


def _numeric_inputs(client: RegistryClient, model: str, version: str) -> list[str]:
    signature = json.loads(client.show_version(model, version).get("signature", "{}") or "{}")
    return [i["name"] for i in signature.get("inputs", [])
            if "string" not in str(i.get("type", ""))]  # fmt: skip


def _read_csv(path: Path, progress: TextIO | None) -> np.ndarray:
    """Numbers, comma-separated, an optional header row; empty cells are missing (NaN)."""
    size = path.stat().st_size
    chunks, done, header_checked = [], 0, False
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK_BYTES):
            block += handle.readline()  # whole lines only
            done += len(block)
            if not header_checked:
                header_checked = True
                first, _, rest = block.partition(b"\n")
                try:
                    [float(cell or "nan") for cell in first.decode().strip().split(",")]
                except ValueError:
                    block = rest  # a header of names
            if block.strip():
                chunks.append(np.genfromtxt(io.BytesIO(block), delimiter=",", ndmin=2))
            if progress is not None:
                progress.write(f"\rreading {path.name}: {100 * min(done, size) // size}%")
    if progress is not None:
        progress.write("\n")
    if not chunks:
        raise Rejected(f"--data {path}: no rows")
    widths = {c.shape[1] for c in chunks}
    if len(widths) != 1:
        raise Rejected(f"--data {path}: rows have different numbers of columns")
    return np.concatenate(chunks)


def load_reference_data(
    client: RegistryClient, model: str, version: str, path: Path, progress: TextIO | None = None
) -> dict[str, np.ndarray]:
    """Input name -> rows, from .npz (one array per input), or .npy/.csv for a model with one
    numeric input. Shown a progress bar on `progress` for large CSV files."""
    inputs = _numeric_inputs(client, model, version)
    if not path.is_file():
        raise Rejected(f"--data {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            unknown = sorted(set(archive.files) - set(inputs))
            if unknown:
                raise Rejected(f"--data {path}: arrays {unknown} are not inputs of {model}"
                               f" version {version} (inputs: {inputs})")  # fmt: skip
            return {name: archive[name] for name in archive.files}
    if len(inputs) != 1:
        raise Rejected(f"--data {path}: {model} version {version} has inputs {inputs}; give"
                       " an .npz file with one array per input")  # fmt: skip
    if suffix == ".npy":
        return {inputs[0]: np.load(path, allow_pickle=False)}
    if suffix == ".csv":
        large = progress is not None and path.stat().st_size >= PROGRESS_FROM_BYTES
        return {inputs[0]: _read_csv(path, progress if large else None)}
    raise Rejected(f"--data {path}: expected a .npy, .npz or .csv file")


def references_from_data(
    data: Mapping[str, np.ndarray], names: Mapping[str, list[str]]
) -> dict[str, FeatureReference]:
    """Per feature, named as the gateway names them (registered names, input[i], ...)."""
    found: dict[str, FeatureReference] = {}
    for name, array in data.items():
        try:
            columns = feature_columns(name, np.asarray(array), names.get(name))
        except ValueError as exc:
            raise Rejected(f"--data: input {name!r}: {exc}") from exc
        if not columns:
            raise Rejected(f"--data: input {name!r} is not numeric (dtype {array.dtype})")
        for feature, column in columns:
            reference = FeatureReference.from_values(column)
            if reference is not None:
                found[feature] = reference
    if not found:
        raise Rejected("--data: no feature has a finite value")
    return found


def reference_from_traffic(
    client: RegistryClient, model: str, source_version: str, since_seconds: float
) -> tuple[dict[str, FeatureReference], int]:
    merged = client.drift.read(model, source_version, since_seconds)
    references = {name: ref for name, sketch in merged.features.items()
                  if (ref := FeatureReference.from_sketch(sketch)) is not None}  # fmt: skip
    if not references:
        raise NotFound(f"no traffic of {model} version {source_version} recorded in that window")
    return references, merged.rows
