"""Settings come from the environment once, flags override them, bad values are named."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gateway.cli import main, parse_settings
from gateway.settings import Settings, SettingsError


def test_defaults_follow_tritons_ports():
    settings = Settings.from_env({})
    assert (settings.grpc_port, settings.metrics_port) == (8001, 8002)
    assert settings.max_message_bytes > 4 * 1024 * 1024


def test_environment_sets_fields_by_name():
    settings = Settings.from_env(
        {"ONNXGATE_GRPC_PORT": "9001", "ONNXGATE_MODELS": "/srv/models",
         "ONNXGATE_SHUTDOWN_GRACE_SECONDS": "2.5", "UNRELATED": "x"}
    )  # fmt: skip
    assert settings.grpc_port == 9001
    assert settings.models == Path("/srv/models")
    assert settings.shutdown_grace_seconds == 2.5


def test_bad_environment_value_names_the_variable():
    with pytest.raises(SettingsError, match=r"ONNXGATE_GRPC_PORT='eighty': expected int"):
        Settings.from_env({"ONNXGATE_GRPC_PORT": "eighty"})


def test_flags_override_the_environment():
    settings = parse_settings(
        ["serve", "--models", "m", "--grpc-port", "7001"],
        {"ONNXGATE_GRPC_PORT": "9001", "ONNXGATE_METRICS_PORT": "9002"},
    )
    assert (settings.models, settings.grpc_port, settings.metrics_port) == (Path("m"), 7001, 9002)


def test_bad_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(["serve", "--grpc-port", "x"], {})
    assert exit_info.value.code == 2
    assert "--grpc-port: invalid int value" in capsys.readouterr().err


def test_missing_model_directory_exits_2_with_a_message(tmp_path, capsys):
    assert main(["serve", "--models", str(tmp_path / "absent")], {}) == 2
    assert "not a directory" in capsys.readouterr().err


def test_a_rollout_lease_that_would_lapse_between_renewals_exits_2(capsys):
    argv = [
        "serve",
        "--no-registry",
        "--rollout-lease-seconds",
        "1",
        "--rollout-tick-seconds",
        "0.5",
    ]
    assert main(argv, {}) == 2
    assert "--rollout-lease-seconds 1.0: expected more than twice" in capsys.readouterr().err


def test_a_webhook_backoff_longer_than_its_cap_exits_2(capsys):
    argv = ["serve", "--no-registry", "--rollout-webhook-backoff-seconds", "5",
            "--rollout-webhook-max-backoff-seconds", "2"]  # fmt: skip
    assert main(argv, {}) == 2
    err = capsys.readouterr().err
    assert "--rollout-webhook-max-backoff-seconds 2.0: expected at least" in err
    assert "--rollout-webhook-backoff-seconds (5.0)" in err


def test_webhook_delivery_settings_come_from_flags_and_the_environment():
    env = {"ONNXGATE_ROLLOUT_WEBHOOK_ATTEMPTS": "12"}
    settings = parse_settings(["serve", "--rollout-webhook-max-backoff-seconds", "300"], env)
    assert settings.rollout_webhook_attempts == 12
    assert settings.rollout_webhook_max_backoff_seconds == 300.0
    assert settings.rollout_webhook_backoff_seconds == 1.0


@pytest.mark.parametrize("budget", ["1", "1024", str(64 * 2**20 - 1), "-2"])
def test_a_version_memory_budget_too_small_to_load_anything_exits_2(budget, capsys):
    argv = ["serve", "--no-registry", "--max-version-memory-bytes", budget]
    assert main(argv, {}) == 2
    assert "--max-version-memory-bytes" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--max-calls", "10"],
            "--max-calls 10: expected at least --grpc-threads + --max-streams +"
            " --feedback-max-calls (24)",
        ),
        (
            ["--receive-timeout-seconds", "0"],
            "--receive-timeout-seconds 0.0: expected 0.001 or more",
        ),
        (["--max-connections", "0"], "--max-connections 0: expected 1 or more"),
        (["--idle-connection-seconds", "-1"], "--idle-connection-seconds -1.0: expected 0.001"),
    ],
)
def test_transport_limits_that_would_serve_nothing_exit_2(flags, message, capsys):
    assert main(["serve", "--no-registry", *flags], {}) == 2
    assert message in capsys.readouterr().err


def test_every_setting_has_a_flag_load_threads_included(capsys):
    settings = parse_settings(["serve", "--load-threads", "3", "--no-rollout-controller"], {})
    assert (settings.load_threads, settings.rollout_controller) == (3, False)
    assert main(["serve", "--no-registry", "--load-threads", "0"], {}) == 2
    assert "onnxgate: --load-threads 0: expected 1 or more" in capsys.readouterr().err


def test_a_bound_is_checked_whether_the_value_came_from_a_flag_or_the_environment(capsys):
    assert main(["serve", "--no-registry"], {"ONNXGATE_WORKERS": "0"}) == 2
    assert "onnxgate: --workers 0: expected 1 or more" in capsys.readouterr().err


def test_workers_auto_is_one_per_cpu_this_process_may_use_from_a_flag_or_the_environment():
    cpus = len(os.sched_getaffinity(0))  # no cgroup CPU quota where the tests run
    assert parse_settings(["serve", "--workers", "auto"], {}).workers == cpus
    assert Settings.from_env({"ONNXGATE_WORKERS": "auto"}).workers == cpus
    with pytest.raises(SettingsError, match=r"ONNXGATE_WORKERS='all': expected int or \"auto\""):
        Settings.from_env({"ONNXGATE_WORKERS": "all"})


def test_auto_is_refused_where_a_setting_has_no_auto(capsys):
    with pytest.raises(SystemExit):
        parse_settings(["serve", "--grpc-threads", "auto"], {})
    assert "--grpc-threads: invalid int value: 'auto'" in capsys.readouterr().err


def test_the_default_replica_id_is_the_host_and_pid_fit_for_a_registry_key():
    replica = Settings().resolved_replica_id()
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", replica)
    assert replica.endswith(f"-{os.getpid()}")
    assert Settings(replica_id="edge-1").resolved_replica_id() == "edge-1"


def test_the_drain_notice_is_at_most_half_the_grace():
    settings = Settings(drain_notice_seconds=5.0, shutdown_grace_seconds=4.0)
    assert settings.drain_notice() == 2.0
    assert settings.drain_notice(grace_seconds=20.0) == 5.0


@pytest.mark.parametrize("value", ["nan", "NaN"])
def test_a_timeout_that_is_not_a_number_exits_2(value, capsys):
    assert main(["serve", "--no-registry", "--request-timeout-seconds", value], {}) == 2
    assert "--request-timeout-seconds nan: expected 0.001 or more" in capsys.readouterr().err
