"""The Grafana dashboards in deploy/grafana: well-formed for Grafana 10/11, every query valid
PromQL (promql_parser, then Prometheus' own parser through promtool) over metrics a real gateway
exports, and the provisioning that loads them."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import promql_parser as pp
import pytest
import yaml

from tests.support.exported_metrics import exported_metric_names
from tests.support.gateways import REPO_ROOT
from tests.support.promql import selected_names, walk

GRAFANA = REPO_ROOT / "deploy" / "grafana"
UIDS = {"onnxgate-fleet.json": "onnxgate-fleet", "onnxgate-model.json": "onnxgate-model"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's unit ids the dashboards may use (Grafana shows an unknown id as a bare number).
UNITS = {"none", "short", "percent", "percentunit", "reqps", "ops", "s", "ms", "µs", "bytes",
         "decbytes", "dateTimeAsIso", "dtdurations"}  # fmt: skip
# Values the variables take when queries are checked; "2.1" needs regex escaping.
SAMPLES = {"job": ["onnxgate", "onnxgate-canary"], "model": ["credit"], "version": ["1", "2.1"]}
# $__rate_interval becomes a duration no query writes by hand, so a hard-coded range shows.
RATE_INTERVAL, RATE_INTERVAL_SECONDS = "7m13s", 433
BUILTINS = {"__rate_interval": RATE_INTERVAL, "__interval": "1m", "__range": "1h"}
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]")
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")

Json = dict[str, Any]
# (where, expression as written) for every query of a dashboard
Queries = list[tuple[str, str]]


def load(name: str) -> Json:
    board: Json = json.loads((GRAFANA / "dashboards" / name).read_text())
    return board


def panels(board: Json) -> Iterator[Json]:
    """Every panel, those inside collapsed rows included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def variables(board: Json) -> dict[str, Json]:
    return {variable["name"]: variable for variable in board["templating"]["list"]}


def queries(board: Json) -> Queries:
    """Every PromQL expression: panel targets and the inner expression of variable queries."""
    found = [(f"panel {p['id']} {t['refId']}", t["expr"]) for p in panels(board)
             for t in p.get("targets", [])]  # fmt: skip
    for name, variable in variables(board).items():
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        inner = re.fullmatch(r"\s*(?:label_values\((.+),\s*\w+\)|query_result\((.+)\))\s*", text)
        assert inner, f"variable {name}: not label_values(expr, label) / query_result(expr)"
        found.append((f"variable {name}", inner.group(1) or inner.group(2)))
    return found


def references(text: str) -> set[str]:
    return {next(g for g in match.groups() if g) for match in VARIABLE.finditer(text)}


def interpolate(expr: str, board: Json) -> str:
    """The expression as Grafana's Prometheus data source sends it: a variable that is multi
    or includeAll becomes a regex of its values with regex characters escaped for a PromQL
    string ("(1|2\\\\.1)"); others are escaped as plain strings."""
    defined = variables(board)

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        form = match.group(3) or match.group(5)
        if name in BUILTINS:
            return BUILTINS[name]
        variable, values = defined[name], SAMPLES[name]
        if form == "regex":  # Grafana's generic format: one backslash, not a PromQL escape
            escaped = [re.sub(r"[\\^$.|?*+()\[\]{}]", r"\\\g<0>", v) for v in values]
        elif form is not None:
            raise AssertionError(f"${{{name}:{form}}}: format not checked by this test")
        elif variable.get("multi") or variable.get("includeAll"):
            escaped = [re.sub(r"[$^*{}\[\]'+?.()|]", r"\\\\\g<0>", v.replace("\\", "\\\\\\\\"))
                       for v in values]  # fmt: skip
        else:
            return values[0].replace("\\", "\\\\").replace("'", "\\\\'")
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    return VARIABLE.sub(value, expr)


def output_labels(node: object) -> set[str] | None:
    """Labels the expression's series carry for certain; None when they keep their own."""
    if isinstance(node, pp.AggregateExpr):
        if str(node.op) in ("topk", "bottomk"):
            return None  # the series keep their own labels
        if node.modifier is None:
            return set()
        by = node.modifier.type == pp.AggModifierType.By
        return set(node.modifier.labels) if by else None
    if isinstance(node, pp.BinaryExpr):
        return output_labels(node.rhs if isinstance(node.lhs, pp.NumberLiteral) else node.lhs)
    if isinstance(node, pp.ParenExpr):
        return output_labels(node.expr)
    if isinstance(node, pp.Call) and node.func.name == "histogram_quantile":
        inner = output_labels(node.args[1])
        return None if inner is None else inner - {"le"}
    if isinstance(node, pp.Call) and node.func.name in ("scalar", "vector", "time"):
        return set()
    return set() if isinstance(node, pp.NumberLiteral) else None


def parsed(board: Json) -> list[tuple[str, str, pp.Expr]]:
    found = []
    for where, expr in queries(board):
        text = interpolate(expr, board)
        try:
            found.append((where, text, pp.parse(text)))
        except ValueError as error:
            raise AssertionError(f"{where}: {text!r} does not parse: {error}") from None
    return found


@pytest.fixture(params=sorted(UIDS), ids=lambda name: name.removesuffix(".json"))
def board(request: pytest.FixtureRequest) -> Json:
    assert isinstance(request.param, str)
    return load(request.param)


def test_every_dashboard_has_its_own_uid_and_title():
    boards = {name: load(name) for name in UIDS}
    assert {name: b["uid"] for name, b in boards.items()} == UIDS
    assert len({b["title"] for b in boards.values()}) == len(boards)
    files = {path.name for path in (GRAFANA / "dashboards").iterdir()}
    assert files == set(UIDS), "every dashboard file is checked here"


def test_panels_are_complete_and_do_not_overlap(board: Json):
    assert board["schemaVersion"] == 39
    every = list(panels(board))
    ids = [panel["id"] for panel in every]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {ids}"
    for panel in every:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0, panel
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['id']} is wider than the grid"
        assert panel["title"], f"panel {panel['id']} has no title"
        if panel["type"] == "row":  # a row only groups the panels below it
            assert "targets" not in panel, f"row {panel['id']} has queries"
            continue
        name = f"panel {panel['id']} {panel['title']!r}"
        assert panel["type"] in {"timeseries", "stat", "heatmap", "table", "state-timeline"}
        assert panel["description"], f"{name} has no description"
        assert panel["datasource"] == DATASOURCE, name
        assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, name
        assert panel["targets"], f"{name} has no query"
        assert all(target["datasource"] == DATASOURCE for target in panel["targets"]), name
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{name}: duplicate refIds {refs}"
    for a, b in itertools.combinations(every, 2):
        ga, gb = a["gridPos"], b["gridPos"]
        apart = (ga["x"] + ga["w"] <= gb["x"] or gb["x"] + gb["w"] <= ga["x"]
                 or ga["y"] + ga["h"] <= gb["y"] or gb["y"] + gb["h"] <= ga["y"])  # fmt: skip
        assert apart, f"panels {a['id']} and {b['id']} overlap"


def test_template_variables_are_defined_and_used(board: Json):
    defined = variables(board)
    datasource = defined["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    assert defined["job"]["definition"] == "label_values(onnxgate_build_info, job)"
    for name, variable in defined.items():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, name
    used_anywhere = references(json.dumps(board))
    undefined = used_anywhere - set(defined) - set(BUILTINS)
    assert not undefined, f"variables used but not defined: {sorted(undefined)}"
    in_queries = set().union(*(references(expr) for _, expr in queries(board)))
    unused = set(defined) - {"datasource"} - in_queries
    assert not unused, f"variables no query uses: {sorted(unused)}"


def test_model_dashboard_selects_a_model_and_its_versions():
    defined = variables(load("onnxgate-model.json"))
    model, version = defined["model"], defined["version"]
    assert model["definition"] == 'label_values(onnxgate_requests_total{job=~"$job"}, model)'
    assert not model["multi"] and not model["includeAll"]
    assert version["multi"] and version["includeAll"]
    assert 'model="$model"' in version["definition"]


def test_queries_parse_and_follow_prometheus_practice(board: Json):
    for where, text, tree in parsed(board):
        for node in walk(tree):
            if isinstance(node, pp.MatrixSelector):
                assert node.range == timedelta(seconds=RATE_INTERVAL_SECONDS), (
                    f"{where}: a range other than $__rate_interval in {text!r}"
                )
            if isinstance(node, pp.Call) and node.func.name in ("rate", "irate", "increase"):
                (selector,) = node.args
                assert isinstance(selector, pp.MatrixSelector), where
                name = selector.vector_selector.name or ""
                assert name.endswith(COUNTER_SUFFIXES), f"{where}: {node.func.name} of a gauge"
            if isinstance(node, pp.Call) and node.func.name == "histogram_quantile":
                labels = output_labels(node.args[1])
                assert labels is None or "le" in labels, f"{where}: the buckets lost le"


def test_legends_name_labels_the_query_keeps(board: Json):
    legends = {f"panel {p['id']} {t['refId']}": t.get("legendFormat", "")
               for p in panels(board) for t in p.get("targets", [])}  # fmt: skip
    for where, _, tree in parsed(board):
        wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legends.get(where, "")))
        kept = output_labels(tree)
        if kept is not None:
            assert wanted <= kept, f"{where}: legend uses {sorted(wanted - kept)}, not kept"


def test_prometheus_accepts_every_query(tmp_path: Path):
    rules = []
    for name, uid in UIDS.items():
        board = load(name)
        for where, text, _ in parsed(board):
            record = "dashboard:" + re.sub(r"\W", "_", f"{uid} {where}")
            rules.append({"record": record, "expr": text})
    path = tmp_path / "dashboards.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.mark.timeout(240)
def test_every_metric_is_one_a_gateway_exports():
    exported = exported_metric_names() | {"up"}  # up: added by Prometheus to every target
    missing: dict[str, set[str]] = {}
    for name in UIDS:
        board = load(name)
        for where, _, tree in parsed(board):
            for metric in selected_names(tree) - exported:
                missing.setdefault(metric, set()).add(f"{name} {where}")
    assert not missing, "not exported by a gateway: " + "; ".join(
        f"{metric} ({', '.join(sorted(places))})" for metric, places in sorted(missing.items())
    )


def test_provisioning_loads_the_dashboards_from_prometheus():
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/onnxgate.yaml").read_text())
    (dashboards,) = provider["providers"]
    assert (dashboards["type"], dashboards["folder"]) == ("file", "onnxgate")
    assert dashboards["options"]["path"] == "/var/lib/grafana/dashboards/onnxgate"
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    (prometheus,) = sources["datasources"]
    assert (prometheus["type"], prometheus["url"]) == ("prometheus", "http://prometheus:9090")
    assert prometheus["uid"] == "prometheus"
    for name in UIDS:  # the datasource variable starts on the provisioned Prometheus
        assert variables(load(name))["datasource"]["current"]["value"] == prometheus["uid"]


def test_compose_mounts_the_dashboards_where_the_provider_reads_them():
    compose = REPO_ROOT / "deploy" / "compose"
    volumes = yaml.safe_load((compose / "compose.yaml").read_text())["services"]["grafana"]
    mounts = {(compose / v.split(":")[0]).resolve(): v.split(":")[1] for v in volumes["volumes"]}
    assert mounts[GRAFANA / "dashboards"] == "/var/lib/grafana/dashboards/onnxgate"
    assert mounts[GRAFANA / "provisioning"] == "/etc/grafana/provisioning"
