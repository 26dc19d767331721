"""`gatectl labels import` against a real redis-server: CSV with and without a header, weights,
.npz, every bad row placed by line and column with nothing written, models that cannot take
labels, progress and summary, Redis lost mid-import, and a second import replacing the first
in the join rather than counting twice."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from registry_client.cli.main import main
from registry_client.client import RegistryClient
from registry_client.quality.join import LabelJoiner
from registry_client.quality.predictions import PRIMARY, PredictionRecord
from registry_client.quality.state import BinaryState
from registry_client.schema import Keys
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.redis_server import RedisServer

MODEL = "credit"


def registered(url: str, directory: Path, *, quality: bool = True) -> None:
    """credit version 1 (a two-class classifier); with `quality`, scored as binary."""
    path = onnx_models.save(onnx_models.classifier(seed=1), directory, MODEL, "1")
    code, _, err = run_gatectl(url, "register", MODEL, "1", str(path), "--create-model")
    assert code == 0, err
    if quality:
        code, _, err = run_gatectl(url, "model", "create", MODEL, "--task", "binary")
        assert code == 0, err


@pytest.fixture
def url(redis_server: RedisServer, tmp_path: Path) -> str:
    registered(redis_server.url, tmp_path)
    return str(redis_server.url)


@pytest.fixture
def client(url: str) -> Iterator[RegistryClient]:
    registry = RegistryClient.from_url(url)
    yield registry
    registry.close()


def stream(url: str) -> list[tuple[str, float, float]]:
    """(id, value, weight) of every label in the model's stream, oldest first."""
    with redis.Redis.from_url(url) as raw:
        entries = raw.xrange(Keys("onnxgate").labels(MODEL))
    return [(f[b"id"].decode(), float(f[b"v"]), float(f[b"w"])) for _, f in entries]


def write(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_header_columns_are_matched_by_name_with_weights(url, client, tmp_path):
    path = write(tmp_path, "weight,label,request_id\n2,1,a\n0.5,0,b\n,1,c\n")
    code, out, err = run_gatectl(url, "labels", "import", MODEL, str(path))
    assert (code, err) == (0, "")  # not a terminal: the summary only, on stdout
    assert out == f"imported 3 labels into credit from {path} in 1 batch\n"
    assert stream(url) == [("a", 1.0, 2.0), ("b", 0.0, 0.5), ("c", 1.0, 1.0)]


def test_csv_without_a_header_is_request_id_label_and_weight_in_order(url, client, tmp_path):
    path = write(tmp_path, "a,1\nb,0\n\nreq:7,1\n")
    code, _, err = run_gatectl(url, "labels", "import", MODEL, str(path))
    assert code == 0, err
    assert stream(url) == [("a", 1.0, 1.0), ("b", 0.0, 1.0), ("req:7", 1.0, 1.0)]
    weighted = write(tmp_path, "d,0,3\n", "weighted.csv")
    assert run_gatectl(url, "labels", "import", MODEL, str(weighted))[0] == 0
    assert stream(url)[-1] == ("d", 0.0, 3.0)


def test_npz_arrays_are_imported_with_their_weights(url, client, tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, request_id=np.array(["a", "b"]), label=np.array([1, 0]),
             weight=np.array([0.25, 4.0]))  # fmt: skip
    code, out, err = run_gatectl(url, "labels", "import", MODEL, str(path), "--json")
    assert code == 0, err
    assert json.loads(out) == {"model": MODEL, "file": str(path), "rows": 2, "imported": 2,
                               "batches": 1, "complete": True}  # fmt: skip
    assert stream(url) == [("a", 1.0, 0.25), ("b", 0.0, 4.0)]


def test_bad_csv_rows_are_named_by_line_and_column_and_nothing_is_written(url, client, tmp_path):
    path = write(tmp_path, "request_id,label,weight\na,1,1\nb,yes,1\nc,1,0\n,1,1\nd,1\ne,inf,1\n")
    code, out, err = run_gatectl(url, "labels", "import", MODEL, str(path))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"gatectl: {path}: line 3, column 2 (label): expected a number, got 'yes'",
        f"gatectl: {path}: line 4, column 3 (weight): expected a finite number > 0, got '0'",
        f"gatectl: {path}: line 5, column 1 (request_id): expected 1 to 128 printable"
        " characters, got ''",
        f"gatectl: {path}: line 6: 2 columns; expected request_id,label,weight",
        f"gatectl: {path}: line 7, column 2 (label): expected a finite number, got 'inf'",
        f"gatectl: {path}: 5 invalid rows; nothing was written",
    ]
    assert stream(url) == []


def test_bad_npz_rows_are_named_by_row_and_array(url, client, tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, request_id=np.array(["a", "b", "c"]), label=np.array([1.0, np.nan, 0.0]))
    code, _, err = run_gatectl(url, "labels", "import", MODEL, str(path))
    assert code == 1
    assert f"{path}: row 1, array label: expected a finite number, got nan" in err
    assert stream(url) == []


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("typo.csv", "request_id,lable\na,1\n", "line 1: header 'request_id,lable'; expected"),
        ("wide.csv", "a,1,1,1\n", "line 1: 4 columns; expected request_id,label[,weight]"),
        ("labels.json", "{}", "expected a .csv or .npz file"),
        ("latin1.csv", None, "line 2: not UTF-8 text"),
        ("objects.npz", None, "not a readable .npz of plain arrays"),
        ("extra.npz", None, "arrays ['label', 'request_id', 'score']; expected request_id"),
    ],
)  # fmt: skip
def test_a_file_of_the_wrong_shape_is_refused_naming_it(url, client, tmp_path, name, content,
                                                         message):  # fmt: skip
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    elif name == "latin1.csv":
        path.write_bytes("a,1\nb\xe9,0\n".encode("latin-1"))
    elif name == "objects.npz":
        np.savez(path, request_id=np.array(["a", 1], dtype=object), label=np.array([1, 0]))
    else:
        np.savez(path, request_id=np.array(["a"]), label=np.array([1]), score=np.array([0.5]))
    code, _, err = run_gatectl(url, "labels", "import", MODEL, str(path))
    assert code == 1
    assert str(path) in err and message in err
    assert stream(url) == []


def test_unknown_model_says_how_to_create_it(url, tmp_path):
    path = write(tmp_path, "a,1\n")
    code, _, err = run_gatectl(url, "labels", "import", "nobody", str(path))
    assert code == 1
    assert "model 'nobody' is not registered" in err
    assert "gatectl model create nobody --task binary|multiclass|regression" in err


def test_model_without_quality_config_says_how_to_give_one(redis_server, tmp_path):
    registered(redis_server.url, tmp_path, quality=False)
    path = write(tmp_path, "a,1\n")
    code, _, err = run_gatectl(redis_server.url, "labels", "import", MODEL, str(path))
    assert code == 1
    assert "model 'credit' has no quality config" in err
    assert "gatectl model create credit --task" in err


class Terminal(io.StringIO):
    """Standard error as a terminal: progress is drawn on it. `on_write` sees each write."""

    def __init__(self, on_write=None) -> None:
        super().__init__()
        self.on_write = on_write

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.on_write is not None:
            self.on_write(text)
        return super().write(text)


def rows_csv(tmp_path: Path, count: int) -> Path:
    return write(tmp_path, "".join(f"id-{i},{i % 2}\n" for i in range(count)))


def test_progress_is_drawn_on_a_terminal_and_the_summary_printed(url, client, tmp_path):
    path = rows_csv(tmp_path, 2500)
    out, err = io.StringIO(), Terminal()
    argv = ["--redis-url", url, "labels", "import", MODEL, str(path), "--batch", "1000"]
    assert main(argv, {"USER": "alice"}, out, err) == 0
    checking, writing, rest = err.getvalue().split("\n")  # each stage keeps its own line
    assert checking.startswith("\rchecking labels.csv  [") and rest == ""
    assert checking.split("\r")[-1].startswith(
        f"checking labels.csv  [{'#' * 24}] 100%  {path.stat().st_size / 1024:.1f} KiB of"
    )
    assert "  2,500 rows" in checking.split("\r")[-1]
    assert writing.split("\r")[-1].startswith(
        f"writing labels.csv  [{'#' * 24}] 100%  2,500 of 2,500 labels"
    )
    assert out.getvalue() == f"imported 2,500 labels into credit from {path} in 3 batches\n"
    assert len(stream(url)) == 2500


def test_quiet_draws_nothing_even_on_a_terminal(url, client, tmp_path):
    path = rows_csv(tmp_path, 10)
    out, err = io.StringIO(), Terminal()
    argv = ["--redis-url", url, "labels", "import", MODEL, str(path), "--quiet"]
    assert main(argv, {"USER": "alice"}, out, err) == 0
    assert err.getvalue() == ""
    assert out.getvalue() == f"imported 10 labels into credit from {path} in 1 batch\n"


def test_redis_lost_mid_import_says_what_was_written_and_the_same_import_completes_it(
    tmp_path,
):
    server = RedisServer(tmp_path, persistent=True)  # comes back with what it had written
    try:
        registered(server.url, tmp_path)
        # Enough rows that writing them outlasts a redraw of the progress line (0.1 s).
        path = rows_csv(tmp_path, 100_000)
        drawn: list[int] = []

        def stop_at_the_first_batches_drawn(text: str) -> None:
            written = re.search(r"writing labels.csv .* ([\d,]+) of 100,000 labels", text)
            if written and not drawn and int(written[1].replace(",", "")) > 0:
                drawn.append(int(written[1].replace(",", "")))
                server.stop()  # before the next batch: exactly the batches drawn are stored

        out, err = io.StringIO(), Terminal(stop_at_the_first_batches_drawn)
        argv = ["--redis-url", server.url, "--json", "labels", "import", MODEL, str(path)]
        assert main(argv, {"USER": "alice"}, out, err) == 4
        assert 0 < drawn[0] < 100_000
        assert (f"{drawn[0]:,} of 100,000 labels were written; of the 1,000 being written then"
                in err.getvalue())  # fmt: skip
        assert "Run the same import again once Redis answers" in err.getvalue()
        assert json.loads(out.getvalue())["imported"] == drawn[0]
        server.start()
        code, _, _ = run_gatectl(server.url, "labels", "import", MODEL, str(path))
        assert code == 0
        ids = [rid for rid, _, _ in stream(server.url)]
        assert len(ids) == drawn[0] + 100_000 and set(ids) == {f"id-{i}" for i in range(100_000)}
    finally:
        server.stop()


def test_importing_a_file_twice_replaces_its_labels_in_the_join(url, client, tmp_path):
    """End to end: predictions logged, the same labels imported twice, joined: each
    prediction counted once, the second label of each id counted as replacing the first."""
    config = client.model_quality(MODEL)
    assert config is not None
    made = int(time.time()) - 600
    scores = {"a": 0.9, "b": 0.2, "c": 0.7}
    client.predictions.write(MODEL, [(rid, [PredictionRecord("1", PRIMARY, made, (), score)])
                                     for rid, score in scores.items()], 86400)  # fmt: skip
    path = write(tmp_path, "request_id,label\na,1\nb,0\nc,0\n")
    for _ in range(2):
        assert run_gatectl(url, "labels", "import", MODEL, str(path))[0] == 0
    assert len(stream(url)) == 6  # the stream holds both; the join replaces
    raw = redis.Redis.from_url(url)
    try:
        result = LabelJoiner(raw, client.keys, "gw-1").join(MODEL, config, None, None,
                                                            time.time())  # fmt: skip
    finally:
        raw.close()
    assert (result.joined, result.replaced, result.unmatched) == (6, 3, {})
    assert client.quality.counts(MODEL) == {"joined": 6, "replaced": 3}
    states = client.quality.read(MODEL, made // 60, made // 60)
    overall = states[("1", PRIMARY, "", "")]
    assert isinstance(overall, BinaryState)
    assert (overall.n, overall.tp, overall.fp, overall.tn) == (3, 1, 1, 1)


# docs/security.md's operator user, before and after the grant `labels import` needs.
OPERATOR_ACL = (
    "on >operator-secret resetkeys ~{onnxgate}:* %R~{onnxgate:*}:stats:*"
    " %R~{onnxgate:*}:sketch:* resetchannels &{onnxgate}:* +@all -@admin -@dangerous"
)


def test_an_operator_user_without_the_label_grant_is_told_which_key(url, tmp_path):
    with redis.Redis.from_url(url) as admin:
        admin.execute_command("ACL", "SETUSER", "operator", *OPERATOR_ACL.split())
        operator = url.replace("redis://", "redis://operator:operator-secret@")
        path = write(tmp_path, "a,1\n")
        code, _, err = run_gatectl(operator, "labels", "import", MODEL, str(path))
        assert code == 1
        assert "may not append to {onnxgate:credit}:labels (XADD" in err
        assert "0 labels were written" in err
        admin.execute_command("ACL", "SETUSER", "operator", "%W~{onnxgate:*}:labels")
        assert run_gatectl(operator, "labels", "import", MODEL, str(path))[0] == 0
    assert stream(url) == [("a", 1.0, 1.0)]
