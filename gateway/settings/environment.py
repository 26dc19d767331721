"""Settings to and from ONNXGATE_* variables: how a gateway reads its environment, and how
the supervisor hands a worker its settings."""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from gateway.settings.schema import ENV_PREFIX, Declared, declared, env_variable

__all__ = ["OTHER_VARIABLES", "SettingsError", "read_env", "write_env"]

# ONNXGATE_* variables that are not settings yet may be in a gateway's environment; every
# other one is refused, so a misspelt setting cannot be silently ignored. The test harness's
# tritonclient virtualenv is inherited by the gateway processes the tests start.
OTHER_VARIABLES = frozenset({"ONNXGATE_TRITON_VENV"})


class SettingsError(ValueError):
    """Raised for a setting with a value of the wrong kind; the message names it."""


def read_env(settings_class: type, env: Mapping[str, str]) -> dict[str, object]:
    """The fields `env` sets, converted to their types; SettingsError names a bad value, or
    an ONNXGATE_* variable that is neither a setting nor in OTHER_VARIABLES."""
    settings = declared(settings_class)
    _refuse_unknown(settings, env)
    values: dict[str, object] = {}
    for setting in settings:
        raw = env.get(setting.env)
        if raw is not None:
            values[setting.name] = _convert(setting, raw)
    return values


def write_env(values: Mapping[str, object]) -> dict[str, str]:
    """The ONNXGATE_* variables from which read_env reads `values` back exactly (None: unset)."""
    return {
        env_variable(name): repr(value) if isinstance(value, float) else str(value)
        for name, value in values.items()
        if value is not None
    }


def _refuse_unknown(settings: tuple[Declared, ...], env: Mapping[str, str]) -> None:
    """SettingsError naming an unknown ONNXGATE_* variable and the setting it is closest to."""
    known = {setting.env for setting in settings}
    allowed = known | OTHER_VARIABLES
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in allowed)
    if not unknown:
        return
    name = unknown[0]
    # Compared without the shared prefix, which would make every name look alike.
    suffixes = [variable.removeprefix(ENV_PREFIX) for variable in sorted(known)]
    nearest = difflib.get_close_matches(name.removeprefix(ENV_PREFIX).upper(), suffixes, n=1)
    message = f"unknown environment variable {name}"
    if nearest:
        message += f"; did you mean {ENV_PREFIX}{nearest[0]}?"
    else:
        message += ": not a setting (onnxgate serve --help names each flag's variable)"
    if len(unknown) > 1:
        message += f" (and {len(unknown) - 1} more: {', '.join(unknown[1:])})"
    raise SettingsError(message)


def _convert(setting: Declared, raw: str) -> object:
    try:
        return _boolean(raw) if setting.kind == "bool" else setting.parse(raw)
    except ValueError as exc:
        expected = setting.annotation + (' or "auto"' if setting.spec.auto else "")
        raise SettingsError(f"{setting.env}={raw!r}: expected {expected}") from exc


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)
