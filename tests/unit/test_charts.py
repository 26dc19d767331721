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
