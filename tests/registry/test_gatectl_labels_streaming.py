"""`gatectl labels import` of large files in bounded memory: a 30 MB CSV read a row at a time
(checked, then written in batches) and a 50 MB .npz read a block of rows at a time, gatectl run
as its own process with its peak memory read from /proc; every label lands as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis

from registry_client.schema import Keys
from tests.registry._large_files import run_measured
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl

# What gatectl may grow by reading a file of any size: a block of rows, a batch of labels.
# Holding a 30 MB file (or its rows) would add more: its text alone is 30 MB, twice decoded.
GROWTH_BOUND = 30 << 20
ID_WIDTH = 128  # characters, the most an id may have: 30 MB of CSV in 224,000 rows (133 bytes each)


def request_id(index: int) -> str:
    return f"{index:0{ID_WIDTH}d}"


@pytest.fixture
def url(redis_server, tmp_path: Path) -> str:
    path = onnx_models.save(onnx_models.classifier(), tmp_path, "credit", "1")
    for argv in (["register", "credit", "1", str(path), "--create-model"],
                 ["model", "create", "credit", "--task", "binary"]):  # fmt: skip
        code, _, err = run_gatectl(redis_server.url, *argv)
        assert code == 0, err
    return str(redis_server.url)


def test_a_30_mb_csv_is_imported_in_bounded_memory_with_every_label(url, tmp_path):
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    small.write_text("request_id,label,weight\na,1,2\n")
    rows = 224_000
    with large.open("w") as file:
        file.write("request_id,label,weight\n")
        for start in range(0, rows, 8000):
            file.writelines(f"{request_id(i)},{i % 2},{1 + i % 3}\n"
                            for i in range(start, start + 8000))  # fmt: skip
    assert large.stat().st_size > 29_000_000
    baseline = run_measured(url, ["labels", "import", "credit", str(small)])
    assert baseline.code == 0, baseline.err
    measured = run_measured(url, ["labels", "import", "credit", str(large), "--batch", "8000"])
    assert measured.code == 0, measured.err
    assert measured.out == f"imported 224,000 labels into credit from {large} in 28 batches\n"
    assert measured.peak_rss < baseline.peak_rss + GROWTH_BOUND, (
        f"gatectl peaked at {measured.peak_rss >> 20} MiB importing 30 MB of labels, against"
        f" {baseline.peak_rss >> 20} MiB for one label"
    )
    with redis.Redis.from_url(url) as raw:
        key, last, index = Keys("onnxgate").labels("credit"), "-", -1
        assert raw.xlen(key) == 1 + rows
        while page := raw.xrange(key, last, "+", count=50_000):
            for _, fields in page:
                label = (fields[b"id"].decode(), float(fields[b"v"]), float(fields[b"w"]))
                expected = ("a", 1.0, 2.0) if index < 0 else (
                    request_id(index), float(index % 2), float(1 + index % 3))  # fmt: skip
                assert label == expected
                index += 1
            last = f"({page[-1][0].decode()}"
        assert index == rows


def test_a_50_mb_npz_is_checked_a_block_at_a_time(url, tmp_path):
    small, large = tmp_path / "small.npz", tmp_path / "large.npz"
    np.savez(small, request_id=np.array(["a"]), label=np.array([1]))
    rows = 100_000  # request_id of 128 characters: 512 bytes a row as numpy keeps them
    ids = np.array([f"{i:0128d}" for i in range(rows)])
    np.savez(large, request_id=ids, label=np.arange(rows) % 2, weight=np.ones(rows))
    del ids
    assert large.stat().st_size > 50_000_000
    baseline = run_measured(url, ["labels", "import", "credit", str(small), "--dry-run"])
    assert baseline.code == 0, baseline.err
    measured = run_measured(url, ["labels", "import", "credit", str(large), "--dry-run"])
    assert measured.code == 0, measured.err
    assert "  appended - -> 100000\n" in measured.out
    assert measured.peak_rss < baseline.peak_rss + GROWTH_BOUND, (
        f"gatectl peaked at {measured.peak_rss >> 20} MiB checking a 50 MB .npz, against"
        f" {baseline.peak_rss >> 20} MiB for one row"
    )


def test_npz_blocks_keep_rows_together_across_arrays_of_other_widths(url, tmp_path):
    """Arrays of 512-, 8- and 1-byte items, read a block at a time side by side: each label
    keeps its own id and weight past the first block."""
    path = tmp_path / "labels.npz"
    rows = 5000
    np.savez(path, request_id=np.array([f"{i:0128d}" for i in range(rows)]),
             label=(np.arange(rows) % 2).astype(np.int8),
             weight=np.arange(1, rows + 1, dtype=np.float64))  # fmt: skip
    code, _, err = run_gatectl(url, "labels", "import", "credit", str(path))
    assert code == 0, err
    with redis.Redis.from_url(url) as raw:
        entries = raw.xrange(Keys("onnxgate").labels("credit"))
    assert [(f[b"id"].decode(), float(f[b"v"]), float(f[b"w"])) for _, f in entries] == [
        (f"{i:0128d}", float(i % 2), float(i + 1)) for i in range(rows)
    ]
