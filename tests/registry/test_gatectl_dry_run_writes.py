"""--dry-run on `register`, `import`, `labels import` and `version retire|unretire`: every check
of the write is made and refuses as the write would, the record it would write is shown as a
diff, and nothing is written (every key of the registry compared before and after)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.support import onnx_models
from tests.support.gatectl import run_gatectl

DRY = "(dry run: nothing written)"


def _value(raw: redis.Redis, key: bytes, kind: str) -> object:
    if kind == "string":
        return raw.get(key)
    if kind == "hash":
        return raw.hgetall(key)
    if kind == "list":
        return raw.lrange(key, 0, -1)
    if kind == "set":
        return sorted(raw.smembers(key))
    if kind == "zset":
        return raw.zrange(key, 0, -1, withscores=True)
    assert kind == "stream", kind
    return raw.xrange(key)


def dump(url: str) -> dict[bytes, object]:
    """Every key in Redis with its type, value and whether it expires."""
    with redis.Redis.from_url(url) as raw:
        keys: dict[bytes, object] = {}
        for key in raw.scan_iter(count=1000):
            kind = raw.type(key).decode()
            keys[key] = (kind, _value(raw, key, kind), raw.ttl(key) >= 0)
    return keys


@pytest.fixture
def url(redis_server, tmp_path: Path) -> str:
    """credit version 1 registered (scored as binary), with a rule routing to it; credit
    version 2 registered and not routed."""
    for version in ("1", "2"):
        path = onnx_models.save(onnx_models.classifier(seed=int(version)), tmp_path / "repo",
                                "credit", version)  # fmt: skip
        code, _, err = run_gatectl(redis_server.url, "register", "credit", version, str(path),
                                   "--create-model")  # fmt: skip
        assert code == 0, err
    for argv in (["model", "create", "credit", "--task", "binary"],
                 ["route", "set", "credit", "--split", "1=100", "--no-wait"]):  # fmt: skip
        code, _, err = run_gatectl(redis_server.url, *argv)
        assert code == 0, err
    return str(redis_server.url)


def test_register_dry_run_shows_the_record_and_uploads_nothing(url, tmp_path):
    path = onnx_models.save(onnx_models.classifier(seed=3), tmp_path, "fraud", "1")
    before = dump(url)
    code, out, err = run_gatectl(url, "register", "fraud", "1", str(path), "--create-model",
                                 "--upload", "--dry-run")  # fmt: skip
    assert (code, err) == (0, "")
    assert dump(url) == before
    model, version = out.split("model fraud version 1  ")
    assert model.startswith(f"model fraud  {DRY}\n  created_at - -> ")
    lines = version.splitlines()
    assert lines[0] == DRY
    sha256 = next(line.split(" -> ")[1] for line in lines if line.startswith("  sha256 "))
    assert f"  artifact_uri - -> redis-blob:{sha256}" in lines
    assert "  status - -> registered" in lines and "  created_by - -> alice" in lines
    assert any(line.startswith('  signature - -> {"inputs": [{"name": "input"') for line in lines)


def test_register_dry_run_json_is_one_plan_a_line(url, tmp_path):
    path = onnx_models.save(onnx_models.classifier(seed=3), tmp_path, "credit", "3")
    before = dump(url)
    code, out, _ = run_gatectl(url, "--json", "register", "credit", "3", str(path), "--dry-run")
    assert code == 0
    assert dump(url) == before
    (plan,) = [json.loads(line) for line in out.splitlines()]
    assert (plan["dry_run"], plan["subject"], plan["before"]) == (True, "model credit version 3",
                                                                 None)  # fmt: skip
    assert plan["after"]["artifact_uri"] == path.resolve().as_uri()
    assert f"size - -> {path.stat().st_size}" in plan["changes"]


def test_register_dry_run_of_the_registered_bytes_is_no_change(url, tmp_path):
    path = tmp_path / "repo" / "credit" / "2" / "model.onnx"
    code, out, _ = run_gatectl(url, "register", "credit", "2", str(path), "--dry-run")
    assert (code, out) == (0, f"model credit version 2  {DRY}\n  no change\n")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["credit", "2", "repo/credit/1/model.onnx"], "versions are immutable: use a new one"),
        (["fraud", "1", "repo/credit/1/model.onnx"], "model 'fraud' is not registered"),
        (["credit", "3", "junk.onnx"], "is not a model onnxruntime can load"),
        (["credit", "3", "repo/credit/1/model.onnx", "--lineage", "parent=9"],
         "lineage.parent: version '9' of model 'credit' is not registered"),
    ],
)  # fmt: skip
def test_register_dry_run_refuses_as_the_write_does(url, tmp_path, argv, said):
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    argv = [*argv[:2], str(tmp_path / argv[2]), *argv[3:]]
    before = dump(url)
    dry = run_gatectl(url, "register", *argv, "--dry-run")
    assert dry[0] == 1 and said in dry[2]
    assert dump(url) == before
    assert run_gatectl(url, "register", *argv) == dry


def test_import_dry_run_shows_each_record_and_writes_nothing(url, tmp_path):
    repo = tmp_path / "repo"
    onnx_models.save(onnx_models.classifier(seed=3), repo, "credit", "3")
    onnx_models.save(onnx_models.classifier(seed=4), repo, "fraud", "1")
    before = dump(url)
    code, out, err = run_gatectl(url, "import", str(repo), "--dry-run")
    assert (code, err) == (0, "")
    assert dump(url) == before
    subjects = [line.removesuffix(f"  {DRY}") for line in out.splitlines()
                if line.endswith(DRY)]  # fmt: skip
    assert subjects == [
        "model credit version 1", "model credit version 2", "model credit version 3",
        "model fraud", "model fraud version 1",
    ]  # fmt: skip
    assert f"model credit version 2  {DRY}\n  no change\n" in out
    assert f"  artifact_uri - -> {(repo / 'fraud' / '1' / 'model.onnx').as_uri()}" in out
    assert f"  description - -> imported from {repo}" in out  # the model it would create


def test_import_dry_run_of_a_bad_version_creates_no_model(url, tmp_path):
    repo = tmp_path / "bad"
    (repo / "fraud" / "1").mkdir(parents=True)
    (repo / "fraud" / "1" / "model.onnx").write_bytes(b"not onnx")
    before = dump(url)
    code, out, err = run_gatectl(url, "import", str(repo), "--dry-run")
    assert (code, out) == (1, "")
    assert "model.onnx is not a model onnxruntime can load" in err
    assert dump(url) == before


def test_retire_dry_run_shows_the_status_and_changes_nothing(url):
    before = dump(url)
    code, out, _ = run_gatectl(url, "version", "retire", "credit", "2", "--dry-run")
    assert (code, out) == (0, f"model credit version 2  {DRY}\n  status registered -> retired\n")
    code, out, _ = run_gatectl(url, "version", "unretire", "credit", "2", "--dry-run")
    assert (code, out) == (0, f"model credit version 2  {DRY}\n  no change\n")
    assert dump(url) == before


def test_retire_dry_run_refuses_a_routed_version_as_the_write_does(url):
    before = dump(url)
    dry = run_gatectl(url, "version", "retire", "credit", "1", "--dry-run")
    assert dry[0] == 1 and "is in its rule (revision 1: 1=100); route it away first" in dry[2]
    assert dump(url) == before
    assert run_gatectl(url, "version", "retire", "credit", "1") == dry


def test_unretire_dry_run_of_a_retired_version(url):
    assert run_gatectl(url, "version", "retire", "credit", "2")[0] == 0
    before = dump(url)
    code, out, _ = run_gatectl(url, "--json", "version", "unretire", "credit", "2", "--dry-run")
    assert code == 0
    assert json.loads(out)["changes"] == ["status retired -> registered"]
    assert dump(url) == before


def test_version_show_takes_no_dry_run(url):
    code, _, err = run_gatectl(url, "version", "show", "credit", "1", "--dry-run")
    assert code == 2 and "only `version retire|unretire` write" in err


def test_labels_import_dry_run_checks_every_row_and_appends_nothing(url, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("".join(f"id-{i},{i % 2}\n" for i in range(2500)))
    before = dump(url)
    code, out, err = run_gatectl(url, "labels", "import", "credit", str(path), "--dry-run")
    assert (code, err) == (0, "")
    assert out == (f"labels of model credit  {DRY}\n  appended - -> 2500\n  batches - -> 3\n"
                   "  stream - -> {onnxgate:credit}:labels\n")  # fmt: skip
    assert dump(url) == before


def test_labels_import_dry_run_refuses_bad_rows_as_the_import_does(url, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("a,1\nb,yes\n")
    before = dump(url)
    dry = run_gatectl(url, "labels", "import", "credit", str(path), "--dry-run")
    assert dry == (1, "", f"gatectl: {path}: line 2, column 2 (label): expected a number,"
                          f" got 'yes'\ngatectl: {path}: 1 invalid rows; nothing was"
                          " written\n")  # fmt: skip
    assert dump(url) == before
    assert run_gatectl(url, "labels", "import", "credit", str(path)) == dry
