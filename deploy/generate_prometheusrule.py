"""Write deploy/kubernetes/base/prometheusrule.yaml from deploy/prometheus/onnxgate-alerts.yaml.

The Prometheus Operator takes alert rules as a PrometheusRule object whose spec.groups are a
Prometheus rule file's groups. One rule file is the source for both Prometheus and the
Operator; run this after changing it (the deployment tests fail while the two differ):

    python deploy/generate_prometheusrule.py          # rewrite the PrometheusRule
    python deploy/generate_prometheusrule.py --check  # exit 1 when it is out of date

Needs only the standard library and PyYAML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
RULES = DEPLOY / "prometheus" / "onnxgate-alerts.yaml"
PROMETHEUS_RULE = DEPLOY / "kubernetes" / "base" / "prometheusrule.yaml"
HEADER = (
    "# Generated from deploy/prometheus/onnxgate-alerts.yaml by\n"
    "# deploy/generate_prometheusrule.py: do not edit; change the rule file and run the script.\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL expressions, descriptions) as literal blocks, as written."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def prometheus_rule(groups: list[Any]) -> dict[str, Any]:
    """The PrometheusRule holding `groups` as they are."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "onnxgate", "labels": {"app.kubernetes.io/name": "onnxgate"}},
        "spec": {"groups": groups},
    }


def render(rules_text: str) -> str:
    """The PrometheusRule file for a rule file's text."""
    document = yaml.safe_load(rules_text)
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise ValueError(f"{RULES}: expected a rule file with a list of groups")
    body = yaml.dump(
        prometheus_rule(document["groups"]),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when out of date")
    args = parser.parse_args(argv)
    wanted = render(RULES.read_text(encoding="utf-8"))
    current = PROMETHEUS_RULE.read_text(encoding="utf-8") if PROMETHEUS_RULE.exists() else ""
    if args.check:
        if current != wanted:
            print(f"{PROMETHEUS_RULE} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        PROMETHEUS_RULE.write_text(wanted, encoding="utf-8")
        print(f"wrote {PROMETHEUS_RULE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
