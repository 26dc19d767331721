"""The SVG figures: valid documents whatever the data, text escaped, readable axes."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest

from registry_client.charts.figures import (
    CurvePanel,
    Decision,
    latency_histograms,
    quantile_curves,
    rollout_timeline,
)
from registry_client.charts.heatmap import psi_colour, psi_heatmap
from registry_client.charts.svg import Scale

SVG = "{http://www.w3.org/2000/svg}"


def test_text_from_the_registry_cannot_inject_markup():
    hostile = '<script>alert("x")</script> & "quotes"'
    picture = rollout_timeline(hostile, [Decision(0.0, "start", 10.0, hostile)], [10, 100])
    root = ElementTree.fromstring(picture)
    assert root.findtext(f"{SVG}title") == hostile
    assert [c.findtext(f"{SVG}title") for c in root.iter(f"{SVG}circle")] == [
        f"00:00:00 start: {hostile}"
    ]
    assert list(root.iter(f"{SVG}script")) == []


@pytest.mark.parametrize(
    "picture",
    [
        quantile_curves("none", [], "reference"),
        latency_histograms("none", {}),
        latency_histograms("idle", {"1": {}}),
        rollout_timeline("none", [], [10, 100]),
        quantile_curves("flat", [CurvePanel("f", "ok", [0.5], [1.0], [1.0])], "reference"),
        psi_heatmap("none", [], [0.0, 300.0], [], (0.1, 0.25)),
        psi_heatmap("gaps", ["a"], [0.0, 300.0], [[None, None]], (0.1, 0.25)),
    ],
)
def test_figures_without_data_are_still_valid_described_documents(picture):
    root = ElementTree.fromstring(picture)
    assert (
        root.get("role") == "img" and root.findtext(f"{SVG}title") and root.findtext(f"{SVG}desc")
    )


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.01, 100.0, [0.01, 0.1, 1.0, 10.0, 100.0]), (0.3, 7.0, [0.5, 1.0, 2.0, 5.0])],
)
def test_a_log_axis_has_round_ticks_within_its_domain(low, high, expected):
    assert Scale(low, high, 0, 100, log=True).ticks() == pytest.approx(expected)


def test_a_narrow_log_axis_still_gets_several_ticks():
    ticks = Scale(0.8, 1.47, 0, 100, log=True).ticks()
    assert len(ticks) >= 3 and all(0.8 <= t <= 1.47 for t in ticks)


def test_figures_inlined_in_one_page_are_each_labelled_by_their_own_title():
    pictures = [latency_histograms(f"latency {i}", {}) for i in range(2)]
    roots = [ElementTree.fromstring(p) for p in pictures]
    labels = [root.get("aria-labelledby", "").split() for root in roots]
    assert labels[0] != labels[1]
    for root, (title, desc) in zip(roots, labels, strict=True):
        assert root.find(f"{SVG}title").get("id") == title  # type: ignore[union-attr]
        assert root.find(f"{SVG}desc").get("id") == desc  # type: ignore[union-attr]


def test_the_heat_map_has_a_cell_per_feature_and_slice_coloured_by_threshold():
    psi: list[list[float | None]] = [[0.01, 0.12, None], [0.3, 0.0, 0.09]]
    root = ElementTree.fromstring(psi_heatmap("psi", ["a", "b"], [0.0, 300.0, 600.0], psi,
                                              (0.1, 0.25)))  # fmt: skip
    cells = [r for r in root.iter(f"{SVG}rect") if r.get("data-psi") is not None]
    assert [c.get("data-psi") for c in cells] == ["0.0100", "0.1200", "", "0.3000", "0.0000",
                                                   "0.0900"]  # fmt: skip
    assert [c.get("fill") for c in cells] == [psi_colour(v, 0.1, 0.25) for row in psi for v in row]
    assert cells[1].get("fill") == "#E69F00" and cells[3].get("fill") == "#D55E00"
    assert cells[2].findtext(f"{SVG}title") == "a, 00:10 UTC: no data"
    assert "Highest per feature: a 0.120, b 0.300." in root.findtext(f"{SVG}desc", "")


def test_quiet_psi_gets_darker_towards_the_warning_line():
    quiet = [psi_colour(v, 0.1, 0.25) for v in (0.0, 0.04, 0.08)]
    assert len(set(quiet)) == 3 and psi_colour(None, 0.1, 0.25) == "#ffffff"
