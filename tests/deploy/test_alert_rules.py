"""The Prometheus rules in deploy/prometheus: promtool accepts them and their unit tests pass;
every alert is tested firing and quiet, carries what on-call needs (severity, summary,
description, a runbook that exists in docs/operations.md), and reads only metrics a gateway
exports or the rule file records."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from typing import Any

import yaml

from tests.support.gateways import REPO_ROOT
from tests.support.promql import metric_names

RULES = REPO_ROOT / "deploy" / "prometheus" / "onnxgate-alerts.yaml"
RULE_TESTS = sorted((REPO_ROOT / "deploy" / "prometheus" / "tests").glob("*.yaml"))
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
RUNBOOKS = "https://github.com/onnxgate/onnxgate/blob/main/docs/operations.md#"

# Every metric the rules read that a gateway exports (the system test checks these against a
# live gateway's /metrics): sample names, so counters with _total, histograms with _bucket.
KNOWN_METRICS = frozenset({
    "onnxgate_build_info",
    "onnxgate_drift_dataset_drift_share",
    "onnxgate_drift_state",
    "onnxgate_fairness_gap",
    "onnxgate_memory_limit_bytes",
    "onnxgate_quality",
    "onnxgate_redis_connected",
    "onnxgate_request_duration_seconds_bucket",
    "onnxgate_requests_total",
    "onnxgate_rollout_decisions_total",
    "onnxgate_rollout_webhooks_total",
    "onnxgate_route_weight",
    "onnxgate_rules_rejected_total",
    "onnxgate_shadow_agreeing_rows_total",
    "onnxgate_shadow_rows_total",
    "onnxgate_worker_restarts_total",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
})  # fmt: skip

Rule = dict[str, Any]


@functools.cache
def rules() -> tuple[Rule, ...]:
    document = yaml.safe_load(RULES.read_text())
    return tuple(rule for group in document["groups"] for rule in group["rules"])


def alerts() -> dict[str, Rule]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def promtool(*arguments: str) -> str:
    """promtool's output; the test fails with it unless promtool exits 0."""
    binary = shutil.which("promtool")
    assert binary is not None, "promtool is not installed: apt-get install -y prometheus"
    done = subprocess.run(
        [binary, *arguments], cwd=REPO_ROOT, capture_output=True, text=True, timeout=50
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(arguments)}:\n{output}"
    return output


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading: lower case, punctuation dropped, spaces
    as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def heading_anchors(markdown: str) -> set[str]:
    return {github_anchor(m[1]) for m in re.finditer(r"^#{1,6} +(.+?) *#*$", markdown, re.M)}


def cases_of_alerts() -> tuple[set[str], set[str]]:
    """(alerts some case expects to fire, alerts some case expects to stay quiet)."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    return firing, quiet


def test_promtool_accepts_the_rule_file():
    output = promtool("check", "rules", str(RULES))
    assert f"SUCCESS: {len(rules())} rules found" in output


def test_the_rules_unit_tests_pass():
    assert RULE_TESTS, "no promtool tests in deploy/prometheus/tests"
    promtool("test", "rules", *map(str, RULE_TESTS))


def test_every_alert_has_a_firing_and_a_quiet_case():
    firing, quiet = cases_of_alerts()
    names = set(alerts())
    assert names - firing == set(), "alerts no case expects to fire"
    assert names - quiet == set(), "alerts no case expects to stay quiet"
    assert (firing | quiet) - names == set(), "cases of alerts the rule file does not have"


def test_every_alert_says_how_bad_what_and_where_its_runbook_is():
    for name, rule in alerts().items():
        assert re.fullmatch(r"Onnxgate(?:[A-Z][a-z0-9]+)+", name), name
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert annotations["runbook_url"] == RUNBOOKS + name.lower(), name


def test_every_runbook_is_a_heading_of_the_operations_guide():
    anchors = heading_anchors(OPERATIONS.read_text())
    missing = {rule["annotations"]["runbook_url"] for rule in alerts().values()}
    missing = {url for url in missing if url.removeprefix(RUNBOOKS) not in anchors}
    assert missing == set(), f"runbooks without a heading in {OPERATIONS.name}"


def test_github_anchors_are_computed_as_github_does():
    assert github_anchor("OnnxgateRedisDisconnected") == "onnxgateredisdisconnected"
    assert github_anchor("Alerts and runbooks") == "alerts-and-runbooks"
    assert github_anchor("Using every core: `--workers N`") == "using-every-core---workers-n"
    assert heading_anchors("## Health\ntext\n### OnnxgateFeatureDrift\n") == {
        "health",
        "onnxgatefeaturedrift",
    }


def test_the_rules_read_only_exported_or_recorded_metrics():
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    read = set().union(*(metric_names(rule["expr"]) for rule in rules()))
    assert read - recorded - KNOWN_METRICS == set(), "metrics neither exported nor recorded"
    assert KNOWN_METRICS - read == set(), "KNOWN_METRICS the rules no longer read"


def test_recording_rules_are_named_level_metric_operations():
    for rule in rules():
        if "record" in rule:
            assert re.fullmatch(r"onnxgate:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule
