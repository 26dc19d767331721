"""The status pages over HTTP, from a real gateway following a real registry: what each page
says is what the registry holds, they are behind the metrics port's tokens, off with a flag,
served from the last reading when Redis hangs or goes away, and escape what they show."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from registry_client.rollout.store import RolloutStore
from tests.support import onnx_models
from tests.support.gateways import GatewayProcess, eventually, make_gateway
from tests.support.redis_server import RedisServer
from tests.support.status_scene import MODEL, Scene, fetch, start_scene


@pytest.fixture
def scene(redis_server: RedisServer, tmp_path: Path) -> Iterator[Scene]:
    started = start_scene(redis_server.url, tmp_path / "models")
    yield started
    started.stop()


def _read(scene: Scene, path: str, marker: str) -> str:
    """The page once its reading shows `marker` (a page seen first waits for its reading)."""
    found: list[str] = []

    def shown() -> bool:
        code, _, body = fetch(scene.base_url + path)
        found[:] = [body]
        return code == 200 and marker in body

    eventually(shown, timeout=20)
    return found[0]


class _Tables(HTMLParser):
    """Each table's caption and rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._caption: str | None = None
        self._rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._caption, self._rows = "", []
        elif tag == "caption":
            self._in_caption = True
        elif tag == "tr":
            self._rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._caption is not None:
            self.tables[self._caption] = self._rows
        elif tag == "caption":
            self._in_caption = False
        elif tag in ("td", "th") and self._cell is not None:
            self._rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._in_caption and self._caption is not None:
            self._caption += data
        elif self._cell is not None:
            self._cell.append(data)


def _tables(body: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(body)
    return parser.tables


def _table(body: str, caption_start: str) -> list[dict[str, str]]:
    """The rows of the table whose caption starts so, as header -> cell."""
    found = [rows for caption, rows in _tables(body).items() if caption.startswith(caption_start)]
    assert len(found) == 1, f"no table {caption_start!r} in {list(_tables(body))}"
    header, *rows = found[0]
    return [dict(zip(header, row, strict=True)) for row in rows if row != ["none"]]


def test_the_overview_shows_what_the_registry_holds(scene: Scene) -> None:
    body = _read(scene, "/status", "Rollouts")
    rule = scene.client.get_route(MODEL)
    assert rule is not None
    [model] = _table(body, "Models")
    weights = {s.version: s.weight for s in rule.split}
    assert model["model"] == MODEL and model["rule revision"] == str(rule.revision)
    assert model["split (weight)"] == ", ".join(
        f"{v}={w} ({100 * w / sum(weights.values()):.0f}%)" for v, w in weights.items()
    )
    assert model["shadows"] == "3 100%" and model["replicas applied"] == "1 of 1"
    assert model["versions"].split(" ") == ["1:", "primary", "50%", "2:", "canary", "50%", "3:",
                                            "shadow", "100%"]  # fmt: skip
    [rollout] = _table(body, "Rollouts")
    assert (rollout["candidate"], rollout["baseline"], rollout["status"]) == ("2", "1", "paused")
    assert rollout["step"] == "2 of 3" and rollout["candidate weight"] == "50%"
    [replica] = _table(body, "Replicas")
    assert replica["replica"] == scene.gateway.replica
    assert replica["applied revision"] == str(rule.revision) and replica["problems"] == "-"
    assert replica["versions"] == "1 READY, 2 READY, 3 READY"
    assert (
        f'href="/status/models/{MODEL}"' in body
        and f'href="/status/models/{MODEL}/rollout"' in body
    )


def test_the_model_page_compares_draws_and_judges(scene: Scene) -> None:
    body = _read(scene, f"/status/models/{MODEL}", "Shadow agreement")
    rule = scene.client.get_route(MODEL)
    assert rule is not None
    assert f"Versions compared since rule revision {rule.revision} took effect" in body
    compared = {(r["version"], r["role"]): r for r in _table(body, "Versions compared")}
    assert set(compared) == {("1", "primary"), ("2", "primary"), ("3", "shadow")}
    assert compared["3", "shadow"]["rule share"] == "100%"
    assert all(int(r["requests"]) > 0 for r in compared.values())
    # Every version but the baseline against it, with an interval. The rule weighs 1 and 2
    # alike: the baseline is the one that served more (the lower version on a tie).
    baseline = max(("1", "2"), key=lambda v: (int(compared[v, "primary"]["requests"]), -int(v)))
    other = "2" if baseline == "1" else "1"
    differences = {(r["version"], r["role"]): r for r in _table(body, "Difference from the")}
    assert set(differences) == {(other, "primary"), ("3", "shadow")}
    assert all(r["baseline"] == baseline for r in differences.values())
    assert all(re.fullmatch(r"[+-]\S+ pts \[\S+, \S+\]( \*)?", r["error rate"])
               for r in differences.values())  # fmt: skip
    drift = {r["feature"]: r for r in _table(body, "Inputs of the last 15 minutes")}
    assert drift["input[0]"]["verdict"] == "alert"  # moved by a standard deviation
    assert {drift[f"input[{i}]"]["verdict"] for i in (1, 2, 3)} == {"ok"}
    # The heat map has a cell per feature and 5-minute slice; the current slice alerts on
    # input[0] as the table does.
    cells = re.findall(r'<rect x="\d+" y="\d+" width="34" height="20" fill="([^"]+)"', body)
    assert len(cells) == 4 * 12 and cells[11] == "#D55E00"
    agreement = _table(body, "Shadows' outputs")
    assert {(r["shadow"], r["primary"]) for r in agreement} >= {("3", "1")}
    quality = {(r["version"], r["role"]): r for r in _table(body, "Live binary quality")}
    assert quality["1", "primary"]["labelled"] == "400"
    by_region = {(r["version"], r["region"]): r for r in _table(body, "By region")}
    assert set(by_region) == {("1", "north"), ("1", "south"), ("3", "north"), ("3", "south")}
    gaps = {r["version"]: r for r in _table(body, "Fairness across region")}
    recall = {region: float(by_region["1", region]["recall"]) for region in ("north", "south")}
    assert recall["north"] == 1.0 and recall["south"] < 1.0  # 1 misses positives in the south
    assert float(gaps["1"]["recall"]) == pytest.approx(recall["north"] - recall["south"], abs=1e-4)
    assert float(gaps["3"]["recall"]) == 0.0
    # Three charts (latency, quantile curves, PSI), each an image labelled by its own title.
    labels = re.findall(r'<svg [^>]*role="img" aria-labelledby="([^"]+)"', body)
    assert len(labels) == 3 and len({label.split()[0] for label in labels}) == 3
    for label in labels:
        for element_id in label.split():
            assert body.count(f'id="{element_id}"') == 1


def test_the_rollout_page_tells_each_step_and_its_checks(scene: Scene) -> None:
    body = _read(scene, f"/status/models/{MODEL}/rollout", "Each step and judgement")
    steps = _table(body, "Each step and judgement")
    actions = [s["action"] for s in steps]  # holds while the candidate had too few requests
    assert actions[0] == "rollout.start" and actions[-1] == "rollout.pause"
    assert set(actions[1:-1]) - {"rollout.hold"} == {"rollout.advance"}
    advance = steps[actions.index("rollout.advance")]
    assert (steps[0]["weight"], advance["weight"], steps[-1]["weight"]) == ("10%", "50%", "50%")
    assert "requests pass" in advance["checks"] and steps[-1]["reason"] == "hold for the pages"
    state = RolloutStore(scene.client).get(MODEL)
    assert state is not None
    checks = {c["check"]: c for c in _table(body, "Checks of the last judgement")}
    assert set(checks) == {c["name"] for c in state.last_checks}
    assert all(c["result"] == "pass" for c in checks.values())
    assert body.count('data-decision="') == len(steps)


def test_pages_are_html_that_runs_nothing_and_is_never_cached(scene: Scene) -> None:
    code, headers, body = fetch(scene.base_url + "/status")
    assert code == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-store" and headers["x-content-type-options"] == "nosniff"
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert '<meta http-equiv="refresh" content="' in body


def test_unknown_pages_and_models_are_404_and_metrics_stay_where_they_were(scene: Scene) -> None:
    _read(scene, "/status", "Rollouts")
    for path in ("/status/models/absent", "/status/models", "/status/models/credit/nothing",
                 "/status/elsewhere"):  # fmt: skip
        code, _, body = fetch(scene.base_url + path)
        assert code == 404, path
        assert "<h1>No " in body
    code, headers, body = fetch(scene.base_url + "/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain")
    assert "onnxgate_requests_total" in body


def test_what_the_registry_says_is_escaped(scene: Scene) -> None:
    RolloutStore(scene.client).resume(MODEL, actor="ops", reason="<script>alert(1)</script>")
    body = _read(scene, f"/status/models/{MODEL}/rollout", "rollout.resume")
    assert "<script" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_a_hung_registry_leaves_the_last_reading_served_at_once(
    redis_server: RedisServer, scene: Scene
) -> None:
    _read(scene, "/status", "Rollouts")
    pid = redis_server._process.pid
    os.kill(pid, signal.SIGSTOP)  # every Redis call now waits for its 5 s timeout
    stopped = time.monotonic()
    try:
        # Through three refreshes: the worker is blocked in a read for most of them.
        while time.monotonic() - stopped < 3 * scene.gateway.settings.status_refresh_seconds:
            started = time.monotonic()
            code, _, body = fetch(scene.base_url + "/status")
            # Under the Redis client's timeout: the page did not wait for Redis.
            assert code == 200 and time.monotonic() - started < 5.0
            assert "Rollouts" in body
    finally:
        os.kill(pid, signal.SIGCONT)
    redis_server.kill()
    body = _read(scene, "/status", "The registry could not be read")
    assert _table(body, "Models")[0]["model"] == MODEL  # the last reading, still shown


def test_no_page_viewed_means_no_reading(redis_server: RedisServer, scene: Scene) -> None:
    """A gateway nobody looks at does not read the registry for pages."""
    assert scene.gateway._metrics_server is not None
    pages = scene.gateway._metrics_server._renderer.pages
    assert pages is not None
    assert pages.worker.reading.overview is None  # type: ignore[attr-defined]
    _read(scene, "/status", "Rollouts")
    assert pages.worker.reading.overview is not None  # type: ignore[attr-defined]


def test_pages_need_a_metrics_token_when_metrics_do(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("scraper metrics s3cret-metrics-token\ncaller infer s3cret-infer-token0\n")
    tokens.chmod(0o600)
    gateway = make_gateway(None, redis_url=redis_server.url, auth_tokens_file=tokens,
                           metrics_auth=True, status_refresh_seconds=1.0)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{gateway.metrics_port}/status"
        assert fetch(url)[0] == 401
        assert fetch(url, {"Authorization": "Bearer s3cret-infer-token0"})[0] == 403

        def served() -> bool:
            return fetch(url, {"Authorization": "Bearer s3cret-metrics-token"})[0] == 200

        eventually(served, timeout=20)
    finally:
        gateway.stop(grace_seconds=1)


def test_no_status_pages_leaves_every_path_to_the_exposition(redis_server: RedisServer) -> None:
    gateway = make_gateway(None, redis_url=redis_server.url, status_pages=False)
    try:
        code, headers, body = fetch(f"http://127.0.0.1:{gateway.metrics_port}/status")
        assert code == 200 and headers["content-type"].startswith("text/plain")
        assert "onnxgate_build_info" in body
    finally:
        gateway.stop(grace_seconds=1)


def test_a_supervisor_serves_the_pages_of_its_workers_registry(
    redis_server: RedisServer, tmp_path: Path, gateway_process: Callable[..., GatewayProcess]
) -> None:
    repo = tmp_path / "models"
    onnx_models.save(onnx_models.classifier(seed=1), repo, MODEL, "1")
    supervisor = gateway_process(repo, "--redis-url", redis_server.url, "--workers", "2",
                                 "--status-refresh-seconds", "1")  # fmt: skip
    url = f"http://127.0.0.1:{supervisor.metrics_port}/status"
    found: list[str] = []

    def both_workers_applied() -> bool:
        code, _, body = fetch(url)
        found[:] = [body]
        return code == 200 and "Replicas" in body and "2 of 2" in body

    eventually(both_workers_applied, timeout=60)
    [model] = _table(found[0], "Models")
    assert model["model"] == MODEL and model["replicas applied"] == "2 of 2"
    replicas = _table(found[0], "Replicas")
    assert len(replicas) == 2 and {r["versions"] for r in replicas} == {"1 READY"}
