"""No silent misconfiguration: unknown ONNXGATE_* variables are refused with a suggestion,
--help names each flag's variable, gatectl reads the gateway's namespace and data directory."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from gateway.cli import main, parse_settings
from gateway.process.private_redis import PrivateRedis
from gateway.settings import OTHER_VARIABLES, Settings, SettingsError, env_variable
from registry_client.cli.main import main as gatectl
from tests.support import onnx_models
from tests.support.gateways import REPO_ROOT, start_gateway_process

VARIABLES = {env_variable(f.name) for f in fields(Settings)}


def _gatectl(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = gatectl(argv, env, out, err)
    return code, out.getvalue(), err.getvalue()


def test_an_unknown_variable_is_a_usage_error_naming_the_nearest(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--no-registry"], {"ONNXGATE_TLS_CERT": "/etc/cert.pem"})
    assert exit_info.value.code == 2
    assert (
        "unknown environment variable ONNXGATE_TLS_CERT; did you mean ONNXGATE_TLS_CERT_FILE?"
        in capsys.readouterr().err
    )


def test_a_variable_like_no_setting_is_refused_without_a_guess():
    with pytest.raises(SettingsError, match=r"ONNXGATE_COLOUR: not a setting") as refused:
        Settings.from_env({"ONNXGATE_COLOUR": "blue"})
    assert "did you mean" not in str(refused.value)


def test_a_lowercase_setting_name_is_suggested_in_capitals():
    with pytest.raises(SettingsError, match=r"did you mean ONNXGATE_GRPC_PORT\?"):
        Settings.from_env({"ONNXGATE_grpc_port": "9001"})


def test_every_unknown_variable_is_named():
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"ONNXGATE_WORKER": "2", "ONNXGATE_LOG_LEVL": "DEBUG"})
    message = str(refused.value)
    assert "ONNXGATE_LOG_LEVL; did you mean ONNXGATE_LOG_LEVEL?" in message
    assert "(and 1 more: ONNXGATE_WORKER)" in message


def test_a_gateway_process_with_a_misspelt_variable_exits_2_before_serving(tmp_path):
    onnx_models.save(onnx_models.classifier(), tmp_path / "repo", "credit", "1")
    env = {**os.environ, "ONNXGATE_GRPC_PROT": "9001"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--models", str(tmp_path / "repo"),
         "--no-registry", "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        "unknown environment variable ONNXGATE_GRPC_PROT; did you mean ONNXGATE_GRPC_PORT?"
        in result.stderr
    )
    assert "gateway started" not in result.stderr


def test_known_other_variables_and_settings_variables_are_accepted(tmp_path, monkeypatch):
    assert not OTHER_VARIABLES & VARIABLES  # a setting needs no exception
    settings = Settings.from_env({"ONNXGATE_TRITON_VENV": "/opt/venv", "ONNXGATE_WORKERS": "2"})
    assert settings.workers == 2
    # A gateway started by the tests inherits the test run's environment.
    onnx_models.save(onnx_models.classifier(), tmp_path / "repo", "credit", "1")
    monkeypatch.setenv("ONNXGATE_TRITON_VENV", str(tmp_path / "venv"))
    monkeypatch.setenv("ONNXGATE_ACCESS_LOG_SAMPLE", "0.5")
    gateway = start_gateway_process(tmp_path / "repo")
    try:
        assert gateway.process.poll() is None
    finally:
        assert gateway.terminate() == 0
        assert gateway.process.stderr is not None
        gateway.process.stderr.close()


def test_the_settings_round_trip_to_workers_passes_the_check():
    settings = Settings(workers=3, access_log_sample=0.25, data_dir=Path("/srv/data"))
    assert Settings.from_env(settings.to_env()) == settings


def _literal_variables(path: Path) -> set[str]:
    return set(re.findall(r"ONNXGATE_[A-Z][A-Z0-9_]*", path.read_text(encoding="utf-8")))


def test_every_onnxgate_variable_the_code_names_is_a_setting_or_allowed():
    """Code that reads or sets an ONNXGATE_* variable that is neither would make every
    gateway started next to it exit 2."""
    sources = [
        *(REPO_ROOT / "gateway").rglob("*.py"),
        *(REPO_ROOT / "registry_client").rglob("*.py"),
        *(REPO_ROOT / "benchmarks").rglob("*.py"),
        *(p for p in (REPO_ROOT / "tests").rglob("*.py") if p.name != Path(__file__).name),
        REPO_ROOT / "Dockerfile",
        REPO_ROOT / ".ci" / "run",
    ]
    named = {(name, p.name) for p in sources if p.is_file() for name in _literal_variables(p)}
    assert named, "the scan found no variables at all"
    strays = sorted(
        (name, where) for name, where in named if name not in VARIABLES | OTHER_VARIABLES
    )
    assert strays == []


def test_serve_help_names_each_flags_variable(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"], {})
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    shown = re.findall(r"\[env (ONNXGATE_[A-Z0-9_]+)\]", text)
    assert sorted(shown) == sorted(VARIABLES)  # each exactly once: every field has a flag
    assert (
        "--grpc-port GRPC_PORT gRPC port; 0 picks one (default 8001) [env ONNXGATE_GRPC_PORT]"
        in text
    )
    assert "--tls-cert TLS_CERT_FILE" in text and "[env ONNXGATE_TLS_CERT_FILE]" in text
    assert "--load-threads LOAD_THREADS versions loading at once" in text
    assert "--no-rollout-controller take no part in driving rollouts" in text
    # Not a setting: left alone, in the group of the settings it empties.
    no_registry = text[text.index("Registry: ") : text.index("Shadows: ")]
    assert "--no-registry serve --models directly, without a registry or routing rules" in (
        no_registry
    )
    assert "routing rules [env" not in no_registry
    assert "Any other ONNXGATE_* variable is refused" in text


@pytest.mark.parametrize("rate", ["1.5", "-0.1", "nan"])
def test_an_access_log_sample_outside_0_to_1_exits_2_naming_the_flag(rate, capsys):
    assert main(["serve", "--no-registry", "--access-log-sample", rate], {}) == 2
    assert "--access-log-sample" in capsys.readouterr().err


def test_an_access_log_sample_from_the_environment_is_checked_too(capsys):
    assert main(["serve", "--no-registry"], {"ONNXGATE_ACCESS_LOG_SAMPLE": "2"}) == 2
    assert "--access-log-sample 2.0: expected 1.0 or less" in capsys.readouterr().err


def test_access_log_sample_within_bounds_is_taken():
    settings = parse_settings(["serve", "--access-log-sample", "1"], {})
    assert settings.access_log_sample == 1.0


def test_gatectl_uses_the_namespace_variable_unless_a_flag_is_given(redis_server):
    url = str(redis_server.url)
    code, _, err = _gatectl(["--redis-url", url, "--actor", "ops", "model", "create", "fraud"],
                            {"ONNXGATE_NAMESPACE": "team-a"})  # fmt: skip
    assert code == 0, err

    def models(argv: list[str], env: dict[str, str]) -> list[str]:
        code, out, err = _gatectl(["--redis-url", url, "--json", *argv, "models"], env)
        assert code == 0, err
        return list(json.loads(out))

    assert models([], {"ONNXGATE_NAMESPACE": "team-a"}) == ["fraud"]
    assert models([], {}) == []  # the default namespace, onnxgate
    assert models(["--namespace", "team-a"], {"ONNXGATE_NAMESPACE": "team-b"}) == ["fraud"]
    assert models([], {"ONNXGATE_NAMESPACE": "team-a", "ONNXGATE_REDIS_URL": "unused"}) == ["fraud"]


def test_gatectl_finds_the_private_redis_in_the_data_dir_variable(tmp_path):
    data = tmp_path / "data"
    private = PrivateRedis(data)
    private.start()
    try:
        home = {"HOME": str(tmp_path / "home")}  # the default data dir holds no Redis
        code, _, err = _gatectl(["--actor", "ops", "model", "create", "fraud"],
                                {**home, "ONNXGATE_DATA_DIR": str(data)})  # fmt: skip
        assert code == 0, err
        code, out, err = _gatectl(["--json", "models"], {**home, "ONNXGATE_DATA_DIR": str(data)})
        assert (code, list(json.loads(out))) == (0, ["fraud"]), err
        code, _, err = _gatectl(["--json", "models"], home)
        assert code == 2
        assert str(tmp_path / "home") in err
        # The flag wins over the variable, as the gateway's --data-dir does.
        code, _, err = _gatectl(["--data-dir", str(tmp_path / "elsewhere"), "models"],
                                {**home, "ONNXGATE_DATA_DIR": str(data)})  # fmt: skip
        assert code == 2
        assert "elsewhere" in err
    finally:
        private.stop()
