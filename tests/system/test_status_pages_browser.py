"""The status pages in a real browser (Debian's chromium, driven by Playwright) against a real
gateway with traffic, a split, a shadow, a reference and a rollout: each page loads with no
console error (a blocked style or script would be one), shows the models, versions, weights
and charts, meets basic accessibility, and is saved as a screenshot under test-artifacts/
(or $TEST_ARTIFACTS_DIR)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.support.redis_server import RedisServer
from tests.support.status_scene import MODEL, Scene, start_scene

ARTIFACTS = Path(
    os.environ.get("TEST_ARTIFACTS_DIR", Path(__file__).resolve().parents[2] / "test-artifacts")
)
CHROMIUM = shutil.which("chromium")

# What every page must have for a screen reader, as the DOM says it: a language, a title, one
# main heading, navigation with a name, tables with captions and column headers, charts as
# images named by their own title and description, links with text.
_ACCESSIBILITY = """() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push("no lang");
  if (!document.title.trim()) problems.push("no title");
  if (document.querySelectorAll("h1").length !== 1) problems.push("not one h1");
  for (const nav of document.querySelectorAll("nav"))
    if (!nav.getAttribute("aria-label")) problems.push("nav without a name");
  for (const table of document.querySelectorAll("table")) {
    if (!table.caption || !table.caption.textContent.trim()) problems.push("table without caption");
    for (const th of table.querySelectorAll("thead th"))
      if (th.getAttribute("scope") !== "col" || !th.textContent.trim())
        problems.push("header cell without scope or text in " + table.caption.textContent);
  }
  for (const svg of document.querySelectorAll("svg")) {
    if (svg.getAttribute("role") !== "img") problems.push("chart not an image");
    const ids = (svg.getAttribute("aria-labelledby") || "").split(" ").filter(Boolean);
    if (ids.length !== 2) problems.push("chart not labelled by title and description");
    for (const id of ids) {
      const found = document.getElementById(id);
      if (!found || !svg.contains(found) || !found.textContent.trim())
        problems.push("chart label " + id + " not its own");
    }
  }
  for (const a of document.querySelectorAll("a"))
    if (!a.textContent.trim()) problems.push("link without text");
  return problems;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None, "chromium is not installed: apt-get install -y chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def scene(redis_server: RedisServer, tmp_path: Path) -> Iterator[Scene]:
    started = start_scene(redis_server.url, tmp_path / "models")
    yield started
    started.stop()


class _Visit:
    """A browser tab on one page, with every console message and page error it raised."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.console: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))
        self.url = url

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type}: {message.text}")

    def open_when(self, selector: str) -> None:
        """Load the page until `selector` is there: a page seen first refreshes itself until
        its reading arrives, so reloading is what a user would see happen."""
        self.page.goto(self.url)
        self.page.wait_for_selector(selector, timeout=30_000)

    def texts(self, selector: str) -> list[str]:
        return [" ".join(t.split()) for t in self.page.locator(selector).all_text_contents()]

    def checked(self, name: str) -> None:
        """No console errors, the accessibility checks pass, and the screenshot is saved."""
        assert self.page.evaluate(_ACCESSIBILITY) == []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=ARTIFACTS / f"status-{name}.png", full_page=True)
        assert self.console == []
        self.page.close()


def _cells(visit: _Visit, caption: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = visit.page.evaluate(
        """caption => {
          const table = [...document.querySelectorAll("table")]
            .find(t => t.caption.textContent.startsWith(caption));
          const header = [...table.querySelectorAll("thead th")].map(th => th.textContent);
          return [...table.querySelectorAll("tbody tr")].map(tr => Object.fromEntries(
            [...tr.cells].map((td, i) => [header[i], td.innerText.replace(/\\s+/g, " ").trim()])));
        }""",
        caption,
    )
    return rows


def test_the_overview_in_a_browser(browser: Browser, scene: Scene) -> None:
    visit = _Visit(browser, scene.base_url + "/status")
    visit.open_when("table caption:text('Rollouts')")
    assert visit.page.title() == "Status - onnxgate"
    [model] = _cells(visit, "Models")
    assert model["model"] == MODEL and model["split (weight)"] == "1=50 (50%), 2=50 (50%)"
    assert model["shadows"] == "3 100%"
    assert model["versions"] == "1: primary 50% 2: canary 50% 3: shadow 100%"
    [rollout] = _cells(visit, "Rollouts")
    assert rollout["status"] == "paused" and rollout["candidate weight"] == "50%"
    [replica] = _cells(visit, "Replicas")
    assert replica["replica"] == scene.gateway.replica
    visit.page.get_by_role("link", name=MODEL, exact=True).first.click()
    visit.page.wait_for_url(f"**/status/models/{MODEL}")
    visit.checked("overview")


def test_the_model_page_in_a_browser(browser: Browser, scene: Scene) -> None:
    visit = _Visit(browser, f"{scene.base_url}/status/models/{MODEL}")
    visit.open_when("table caption:text('Shadows')")
    compared = {(r["version"], r["role"]) for r in _cells(visit, "Versions compared")}
    assert compared == {("1", "primary"), ("2", "primary"), ("3", "shadow")}
    charts = visit.page.get_by_role("img")
    names = [charts.nth(i).get_attribute("aria-labelledby") for i in range(charts.count())]
    assert len(names) == 3
    titles = visit.texts("svg > title")
    rule = scene.client.get_route(MODEL)
    assert rule is not None
    assert titles[0] == f"Latency of {MODEL}'s versions under rule revision {rule.revision}"
    assert titles[1].startswith(f"Drift of {MODEL} version 1 against reference")
    assert titles[2].startswith(f"PSI of {MODEL} version 1's inputs")
    # The latency chart draws a line per version and role that served.
    series = visit.page.locator("svg polyline[data-series]").evaluate_all(
        "lines => lines.map(l => l.dataset.series)"
    )
    assert {"version 1 (primary)", "version 2 (primary)", "version 3 (shadow)"} <= set(series)
    drift = {r["feature"]: r["verdict"] for r in _cells(visit, "Inputs of the last 15 minutes")}
    assert drift == {"input[0]": "alert", "input[1]": "ok", "input[2]": "ok", "input[3]": "ok"}
    regions = {(r["version"], r["region"]) for r in _cells(visit, "By region")}
    assert regions == {("1", "north"), ("1", "south"), ("3", "north"), ("3", "south")}
    visit.checked("model")


def test_the_rollout_page_in_a_browser(browser: Browser, scene: Scene) -> None:
    visit = _Visit(browser, f"{scene.base_url}/status/models/{MODEL}/rollout")
    visit.open_when("table caption:text('Each step')")
    steps = _cells(visit, "Each step and judgement")
    actions = [s["action"] for s in steps]  # holds while the candidate had too few requests
    assert actions[0] == "rollout.start" and actions[-1] == "rollout.pause"
    assert set(actions[1:-1]) - {"rollout.hold"} == {"rollout.advance"}
    decisions = visit.page.locator("svg circle[data-decision]").evaluate_all(
        "marks => marks.map(m => m.dataset.decision)"
    )
    assert decisions == [action.removeprefix("rollout.") for action in actions]
    visit.checked("rollout")
