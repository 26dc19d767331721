"""The compose demo, checked offline: the Compose Specification's schema, the files it builds
and mounts, the gateways' settings as the gateway reads them, and the Prometheus and Grafana
wiring to the gateways, the alert rules and the dashboards. PROMTOOL names promtool (default:
on PATH)."""

from __future__ import annotations

import json
import os
import posixpath
import re
from typing import Any

import jsonschema
import yaml

from gateway.settings import Settings
from tests.deploy.test_manifests import (
    DEPLOY,
    IMAGE_USER,
    ROOT,
    RULE_FILE,
    drain_bound,
    run,
    settings_of,
)

COMPOSE = DEPLOY / "compose"
Obj = dict[str, Any]


def compose() -> Obj:
    document: Obj = yaml.safe_load((COMPOSE / "compose.yaml").read_text(encoding="utf-8"))
    return document


def mounts(service: Obj) -> dict[str, str]:
    """A service's volumes: container path -> source (a path relative to compose.yaml, or a
    named volume), with ":ro" kept on the source of a read-only one."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        found[target] = f"{source}:ro" if mode == ["ro"] else source
    return found


def gateways() -> dict[str, tuple[Obj, Settings]]:
    """The services built from the Dockerfile, with the settings `onnxgate serve` makes of
    their environment and the image's default command."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    command = json.loads(re.findall(r"^CMD (.*)$", dockerfile, re.M)[-1])
    return {
        name: (service, settings_of(service.get("command", command),
                                    {k: str(v) for k, v in service["environment"].items()}))
        for name, service in compose()["services"].items()
        if "build" in service
    }  # fmt: skip


def test_compose_file_matches_the_compose_specification():
    schema = json.loads((ROOT / "tests/schemas/compose-spec.json").read_text(encoding="utf-8"))
    errors = jsonschema.Draft7Validator(schema).iter_errors(compose())
    assert not [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    assert "version" not in compose()


def test_compose_builds_and_mounts_what_exists():
    document = compose()
    for name, service in document["services"].items():
        if "build" in service:
            assert (COMPOSE / service["build"]["context"] / "Dockerfile").is_file()
        for source in (m.removesuffix(":ro") for m in mounts(service).values()):
            assert (
                (COMPOSE / source).exists()
                if source.startswith(".")
                else source in document["volumes"]
            ), name


def test_compose_gateways_share_redis_and_drain_within_the_stop_grace_period():
    services, ids = compose()["services"], set()
    for name, (service, settings) in gateways().items():
        assert settings.redis_url == "redis://redis:6379/0"
        assert service["depends_on"]["redis"] == {"condition": "service_healthy"}
        assert mounts(service)[str(settings.models)] == "../../examples/models:ro"
        assert float(service["stop_grace_period"].removesuffix("s")) > drain_bound(settings)
        assert IMAGE_USER and service["user"] == IMAGE_USER.group(1)
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        assert "no-new-privileges:true" in service["security_opt"]
        targets = {int(p.split(":")[1]) for p in service["ports"]}
        assert targets == {settings.grpc_port, settings.metrics_port}, name
        ids.add(settings.replica_id)
    assert len(gateways()) == len(ids) == 2, "each replica heartbeats under its own id"
    published = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published)), published
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "--appendonly" in services["redis"]["command"]


def test_prometheus_scrapes_both_gateways_and_loads_the_rules():
    services = compose()["services"]
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["global"]["scrape_interval"] == "15s"
    (job,) = config["scrape_configs"]
    targets = {t for static in job["static_configs"] for t in static["targets"]}
    assert job["job_name"] == "onnxgate"
    assert targets == {f"{n}:{settings.metrics_port}" for n, (_, settings) in gateways().items()}
    # The rule file is found by its path relative to prometheus.yml in the container too.
    prometheus = mounts(services["prometheus"])
    (config_path,) = [
        a.split("=", 1)[1]
        for a in services["prometheus"]["command"]
        if a.startswith("--config.file=")
    ]
    source = {target: COMPOSE / path.removesuffix(":ro") for target, path in prometheus.items()}
    assert source[config_path].resolve() == COMPOSE / "prometheus.yml"
    for rules in config["rule_files"]:
        inside = posixpath.normpath(posixpath.join(posixpath.dirname(config_path), rules))
        assert source[inside].resolve() == (COMPOSE / rules).resolve() == RULE_FILE
    done = run(
        os.environ.get("PROMTOOL", "promtool"), "check", "config", "deploy/compose/prometheus.yml"
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_reads_the_compose_prometheus_and_the_dashboards():
    services = compose()["services"]
    grafana = mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning"] == "../grafana/provisioning:ro"
    provisioning = DEPLOY / "grafana/provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yaml").read_text())[
        "datasources"
    ]
    assert (
        source["url"] == "http://prometheus:9090" and "9090:9090" in services["prometheus"]["ports"]
    )
    (provider,) = yaml.safe_load((provisioning / "dashboards/onnxgate.yaml").read_text())[
        "providers"
    ]
    assert grafana[provider["options"]["path"]] == "../grafana/dashboards:ro"
    assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
