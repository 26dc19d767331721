"""The Kubernetes manifests, checked offline against Kubernetes' schemas and against the
gateway itself: its flags and variables, ports, health names, drain bound, user.

KUBECTL names the kubectl whose kustomize builds (default: on PATH). The kustomizations build
alike with kustomize v5 and with v2.0.3 (Debian's kubectl 1.20)."""

from __future__ import annotations

import functools
import os
import re
import secrets
import subprocess
import sys
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.api.health import LIVENESS
from gateway.api.server import INFERENCE_SERVICE
from gateway.cli import parse_settings
from gateway.process.shutdown import WATCHDOG_MARGIN_SECONDS
from gateway.security.material import Security, SecurityError
from gateway.settings import Settings
from gateway.settings.checks import first_problem
from gateway.settings.schema import declared

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BUILDS = {"base": DEPLOY / "kubernetes/base", "overlay": DEPLOY / "kubernetes/overlays/example"}
# kustomize v5 still applies the two fields v2 needs in an overlay, warning about each.
TOLERATED = re.compile(r"# Warning: '(bases|patchesStrategicMerge)' is deprecated\.")
# gRPC probes are GA from 1.27; the newest schemas kubernetes-validate bundles as well.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
RULE_FILE = DEPLOY / "prometheus/onnxgate-alerts.yaml"
SETTING_VARIABLES = {setting.env for setting in declared(Settings)}
IMAGE_USER = re.search(r"^USER (\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
Obj = dict[str, Any]
each_build = pytest.mark.parametrize("name", sorted(BUILDS))


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


@functools.cache
def build(name: str) -> tuple[Obj, ...]:
    done = run(os.environ.get("KUBECTL", "kubectl"), "kustomize", str(BUILDS[name]))
    assert done.returncode == 0, f"kubectl kustomize {BUILDS[name]}:\n{done.stderr}"
    noise = [line for line in done.stderr.splitlines() if line and not TOLERATED.match(line)]
    assert not noise, "\n".join(noise)
    return tuple(yaml.safe_load_all(done.stdout))


def one(objects: tuple[Obj, ...], kind: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def pod(objects: tuple[Obj, ...]) -> Obj:
    spec: Obj = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def settings_of(args: list[str], env: dict[str, str]) -> Settings:
    """What `onnxgate serve ARGS` makes of them (a flag or ONNXGATE_* variable it does not
    know is a usage error), checked as it checks them before starting, but for --models."""
    unknown = {k for k in env if k.startswith("ONNXGATE_")} - SETTING_VARIABLES
    assert not unknown, f"not settings: {sorted(unknown)}"
    try:
        settings = parse_settings(["serve", *args], env)
    except SystemExit:
        pytest.fail(f"onnxgate serve refuses {args} with {env}")
    assert first_problem(replace(settings, models=None)) is None
    return settings


@functools.cache
def gateway(name: str) -> tuple[Obj, Settings]:
    """The gateway container and its settings, Secret values and the pod name filled in."""
    objects = build(name)
    (container,) = pod(objects)["containers"]
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        assert source["configMapRef"]["name"] == one(objects, "ConfigMap")["metadata"]["name"]
        env.update(one(objects, "ConfigMap")["data"])
    for entry in container["env"]:
        found = entry.get("valueFrom", {})
        if "secretKeyRef" in found:
            env[entry["name"]] = one(objects, "Secret")["stringData"][found["secretKeyRef"]["key"]]
        else:
            env[entry["name"]] = entry.get("value", "onnxgate-7d4b9c-x2k4q")
    return container, settings_of(container["args"], env)


def drain_bound(settings: Settings) -> float:
    """How long after SIGTERM the gateway has surely exited (docs/operations.md)."""
    margin = max(2.0, WATCHDOG_MARGIN_SECONDS)
    return settings.drain_notice() + settings.shutdown_grace_seconds + margin


@each_build
def test_builds_every_object_with_the_common_label(name):
    kinds = {o["kind"] for o in build(name)}
    assert kinds >= {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "NetworkPolicy", *OPERATOR_KINDS}  # fmt: skip
    for o in build(name):
        assert o["metadata"]["labels"]["app.kubernetes.io/name"] == "onnxgate", o["kind"]
        assert (o["metadata"].get("namespace") == "inference") == (name == "overlay")


@each_build
def test_builtin_kinds_match_kubernetes_schemas(name):
    for o in (o for o in build(name) if o["kind"] not in OPERATOR_KINDS):
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{o['kind']} {version}: {exc.message} at {list(exc.absolute_path)}")


@each_build
def test_operator_objects_are_complete_and_the_rules_fresh(name):
    objects = build(name)
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    rule = one(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["name"]
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        assert all(r["expr"] and (("alert" in r) != ("record" in r)) for r in group["rules"])
    wanted = yaml.safe_load(RULE_FILE.read_text(encoding="utf-8"))["groups"]
    stale = "prometheusrule.yaml is out of date: run python deploy/generate_prometheusrule.py"
    assert rule["spec"]["groups"] == wanted, stale
    assert run(sys.executable, "deploy/generate_prometheusrule.py", "--check").returncode == 0, (
        stale
    )


@each_build
def test_the_gateway_accepts_its_flags_variables_and_files(name):
    objects, (container, settings) = build(name), gateway(name)
    assert "command" not in container, "the image's entrypoint is `onnxgate serve`"
    assert set(one(objects, "ConfigMap")["data"]) <= SETTING_VARIABLES
    mounts: dict[str, Obj] = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod(objects)["volumes"]}
    for writable in ("/tmp", str(settings.data_dir)):  # the root file system is read-only
        assert not mounts[writable].get("readOnly"), writable
        assert "emptyDir" in volumes[mounts[writable]["name"]], writable
    assert settings.redis_url, "replicas share the registry in an external Redis"

    def mount_of(path: Path | None) -> Obj:
        found = [p for p in mounts if PurePosixPath(str(path)).is_relative_to(p)]
        assert found, f"{path} is on no volume"
        return mounts[max(found, key=len)]

    assert mount_of(settings.models).get("readOnly")
    for path in (settings.auth_tokens_file, settings.tls_cert_file, settings.tls_key_file):
        if path is not None:
            items = volumes[mount_of(path)["name"]]["secret"]["items"]
            assert {i["path"]: i["key"] for i in items}[path.name] in one(objects, "Secret")[
                "stringData"
            ]


@each_build
def test_placeholder_tokens_keep_the_gateway_from_starting(name, tmp_path):
    settings = gateway(name)[1]
    tokens = one(build(name), "Secret")["stringData"]["tokens"]
    entries = [line for line in tokens.splitlines() if line.split("#", 1)[0].strip()]
    assert entries
    for entry in entries:  # each placeholder alone is refused, so none can be left in use
        (tmp_path / "placeholder").write_text(entry, encoding="utf-8")
        with pytest.raises(SecurityError, match="16"):
            Security.from_settings(replace(settings, auth_tokens_file=tmp_path / "placeholder"))
    real = re.sub(r"REPLACE\S*", lambda _: secrets.token_urlsafe(32), tokens)
    (tmp_path / "real").write_text(real, encoding="utf-8")
    Security.from_settings(replace(settings, auth_tokens_file=tmp_path / "real"))


@each_build
def test_ports_probes_and_grace_period_are_the_gateways(name):
    objects, (container, settings) = build(name), gateway(name)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": settings.grpc_port, "metrics": settings.metrics_port}
    service = one(objects, "Service")["spec"]
    assert {p["name"]: p["targetPort"] for p in service["ports"]} == {n: n for n in ports}
    assert service["clusterIP"] == "None", "gRPC clients balance calls over the pods themselves"
    probes = {kind: container[f"{kind}Probe"] for kind in ("startup", "liveness", "readiness")}
    assert {kind: probe["grpc"]["service"] for kind, probe in probes.items()} == {
        "startup": LIVENESS, "liveness": LIVENESS, "readiness": INFERENCE_SERVICE}  # fmt: skip
    assert {probe["grpc"]["port"] for probe in probes.values()} == {settings.grpc_port}
    assert all(p["timeoutSeconds"] < p["periodSeconds"] for p in probes.values())
    startup = probes["startup"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= settings.load_timeout_seconds
    assert settings.drain_notice() >= 1, "clients following health need a notice"
    assert pod(objects)["terminationGracePeriodSeconds"] > drain_bound(settings)
    assert "lifecycle" not in container, "health's drain notice does a preStop's job"


@each_build
def test_pod_and_container_run_unprivileged(name):
    spec, container = pod(build(name)), gateway(name)[0]
    uid, gid = map(int, IMAGE_USER.group(1).split(":")) if IMAGE_USER else (0, 0)
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid,
        "fsGroup": gid, "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip
    context = container["securityContext"]
    assert (
        context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    )
    assert context["capabilities"] == {"drop": ["ALL"]} and context["runAsNonRoot"] is True
    assert context["seccompProfile"] == {"type": "RuntimeDefault"} and uid > 0
    assert spec["automountServiceAccountToken"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]


@each_build
def test_selectors_and_targets_reach_the_deployment(name):
    objects = build(name)
    deployment = one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    spread = pod(objects)["topologySpreadConstraints"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        one(objects, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
        one(objects, "Service")["spec"]["selector"],
        *(constraint["labelSelector"]["matchLabels"] for constraint in spread),
    ]
    assert all(s and s.items() <= labels.items() for s in selectors), selectors
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["maxReplicas"]
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] < hpa["minReplicas"]
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]


@each_build
def test_the_network_policy_lets_clients_scrapers_redis_and_dns_through(name):
    policy = one(build(name), "NetworkPolicy")["spec"]
    settings = gateway(name)[1]
    into = {p["port"]: rule["from"] for rule in policy["ingress"] for p in rule["ports"]}
    assert {settings.grpc_port, settings.metrics_port} <= into.keys()
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert into[settings.metrics_port] == [{"namespaceSelector": monitoring}]
    assert {6379, 53} <= {p["port"] for rule in policy["egress"] for p in rule["ports"]}
