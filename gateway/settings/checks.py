"""What `onnxgate serve` refuses (exit 2) before anything starts: each setting's declared
bounds, and the rules that tie settings together."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gateway.settings.declaration import Settings
from gateway.settings.schema import Declared, declared

__all__ = ["CHECKS", "MIN_VERSION_MEMORY_BYTES", "Check", "first_problem"]

# Below this onnxruntime can fail its own allocations in ways that hang it.
MIN_VERSION_MEMORY_BYTES = 64 * 2**20


@dataclass(frozen=True, slots=True)
class Check:
    """A rule over several settings: `rule` says it (docs/configuration.md), `problem` returns
    what is wrong with a Settings, or None."""

    rule: str  # Markdown
    problem: Callable[[Settings], str | None]


def _flag(name: str) -> str:
    (setting,) = [s for s in declared(Settings) if s.name == name]
    return setting.flag


def _models_directory(settings: Settings) -> str | None:
    if settings.models is not None and not settings.models.is_dir():
        return f"{_flag('models')} {settings.models}: not a directory"
    return None


def _version_memory(settings: Settings) -> str | None:
    budget = settings.max_version_memory_bytes
    if 0 < budget < MIN_VERSION_MEMORY_BYTES:
        return (f"{_flag('max_version_memory_bytes')} {budget}: expected -1 (a quarter of the"
                f" memory), 0 (no probe) or at least {MIN_VERSION_MEMORY_BYTES}")  # fmt: skip
    return None


def _lasting_threads(settings: Settings) -> str | None:
    lasting = settings.grpc_threads + settings.max_streams + settings.feedback_max_calls
    if settings.max_calls < lasting:
        return (f"{_flag('max_calls')} {settings.max_calls}: expected at least"
                f" {_flag('grpc_threads')} + {_flag('max_streams')} +"
                f" {_flag('feedback_max_calls')} ({lasting}), the threads that always"
                " exist")  # fmt: skip
    return None


def _rollout_lease(settings: Settings) -> str | None:
    lease, tick = settings.rollout_lease_seconds, settings.rollout_tick_seconds
    if lease <= 2 * tick:
        return (f"{_flag('rollout_lease_seconds')} {lease}: expected more than twice"
                f" {_flag('rollout_tick_seconds')} ({tick}), or the leader's lease lapses"
                " between its renewals")  # fmt: skip
    return None


def _webhook_backoff(settings: Settings) -> str | None:
    first, most = (
        settings.rollout_webhook_backoff_seconds,
        settings.rollout_webhook_max_backoff_seconds,
    )
    if most < first:
        return (f"{_flag('rollout_webhook_max_backoff_seconds')} {most}: expected at least"
                f" {_flag('rollout_webhook_backoff_seconds')} ({first})")  # fmt: skip
    return None


def _redis_url(settings: Settings) -> str | None:
    if settings.redis_url is None:
        return None
    # Imported here: the URL's forms belong to the registry client, which `onnxgate probe`
    # (the settings without serving) does not load.
    from registry_client.connection.urls import RedisUrlError, parse_redis_url

    try:
        parse_redis_url(settings.redis_url)
    except RedisUrlError as exc:
        return f"{_flag('redis_url')}: {exc}"
    return None


# After the bounds, in this order.
CHECKS = (
    Check(
        "`--redis-url` is one of the forms in [security.md](security.md#redis-urls), and"
        " a password file it names can be read.",
        _redis_url,
    ),
    Check(
        f"`--max-version-memory-bytes` is -1, 0 or at least {MIN_VERSION_MEMORY_BYTES // 2**20}"
        " MiB: below that onnxruntime can fail its own allocations in ways that hang it.",
        _version_memory,
    ),
    Check(
        "`--max-calls` is at least `--grpc-threads` + `--max-streams` + `--feedback-max-calls`:"
        " those threads always exist.",
        _lasting_threads,
    ),
    Check(
        "`--rollout-lease-seconds` is more than twice `--rollout-tick-seconds`, or the"
        " leader's lease lapses between its renewals.",
        _rollout_lease,
    ),
    Check(
        "`--rollout-webhook-max-backoff-seconds` is at least `--rollout-webhook-backoff-seconds`.",
        _webhook_backoff,
    ),
)


def first_problem(settings: Settings) -> str | None:
    """What is wrong with `settings`, the first thing found, naming its flag; None if nothing.
    The --models directory is looked at first, then every bound, then CHECKS."""
    for problem in _problems(settings):
        return problem
    return None


def _problems(settings: Settings) -> Iterator[str]:
    if (models := _models_directory(settings)) is not None:
        yield models
    for setting in declared(Settings):
        if (outside := _outside_bounds(setting, getattr(settings, setting.name))) is not None:
            yield outside
    for check in CHECKS:
        if (problem := check.problem(settings)) is not None:
            yield problem


def _outside_bounds(setting: Declared, value: float) -> str | None:
    least, most = setting.spec.at_least, setting.spec.at_most
    if least is not None and not value >= least:  # NaN is refused too
        return f"{setting.flag} {value}: expected {least} or more"
    if most is not None and not value <= most:  # not `>`: NaN is refused as well
        return f"{setting.flag} {value}: expected {most} or less"
    return None
