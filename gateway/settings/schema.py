"""How a setting is declared: once, as a Settings field whose metadata carries its concern,
help, bounds and flag. The environment variable, the `serve` flag, the validation and
docs/configuration.md are all derived from that one declaration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["ENV_PREFIX", "Concern", "Declared", "Spec", "declared", "env_variable"]

ENV_PREFIX = "ONNXGATE_"
_SPEC = "onnxgate.setting"
T = TypeVar("T")
# Defaults in bytes or seconds are also said in these units where they fall on one (sizes
# one short of one as well: 2 GiB - 1 is protobuf's limit).
_BYTE_UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
_SECOND_UNITS = (("days", 86400), ("hours", 3600))


def env_variable(field: str) -> str:
    """The environment variable of a Settings field: ONNXGATE_<FIELD IN CAPITALS>."""
    return ENV_PREFIX + field.upper()


@dataclass(frozen=True, slots=True)
class Spec:
    """What a Settings field declares besides its name, type and default."""

    concern: Concern
    help: str
    flag: str | None  # None: --<field name with dashes>
    at_least: float | None  # smaller values are refused (exit 2)
    at_most: float | None  # larger values, and NaN, are refused (exit 2)
    choices: tuple[str, ...]
    default_text: str | None  # a default worked out at start, said in words
    auto: Callable[[], int] | None  # the value "auto" stands for, worked out when read


class Concern:
    """A group of settings (one section of --help and of docs/configuration.md); calling it
    declares one setting of the group as a dataclass field."""

    def __init__(self, title: str, summary: str) -> None:
        self.title = title
        self.summary = summary

    def __repr__(self) -> str:
        return f"Concern({self.title!r})"

    def __call__(
        self,
        default: T,
        help: str,  # noqa: A002  # argparse's name for it
        *,
        flag: str | None = None,
        at_least: float | None = None,
        at_most: float | None = None,
        choices: tuple[str, ...] = (),
        default_text: str | None = None,
        auto: Callable[[], int] | None = None,
    ) -> T:
        spec = Spec(self, help, flag, at_least, at_most, choices, default_text, auto)
        field: T = dataclasses.field(default=default, metadata={_SPEC: spec})
        return field


@dataclass(frozen=True, slots=True)
class Declared:
    """One setting as declared: a Settings field with its spec."""

    name: str
    annotation: str  # as written: "int", "Path | None", ...
    default: Any
    spec: Spec

    @property
    def env(self) -> str:
        return env_variable(self.name)

    @property
    def flag(self) -> str:
        """A boolean that is on by default is turned off by --no-<name>."""
        if self.spec.flag is not None:
            return self.spec.flag
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.default is True else f"--{dashed}"

    @property
    def kind(self) -> str:
        """int, float, bool, Path or str."""
        return self.annotation.split(" | ")[0]

    def parse(self, raw: str) -> object:
        """A flag's or variable's text as this setting's type (ValueError if it is not one):
        int, float or Path, "auto" where the setting has one, else the text itself."""
        if self.spec.auto is not None and raw == "auto":
            return self.spec.auto()
        kind = self.kind
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        return raw

    def default_shown(self) -> str | None:
        """The default as --help and the documentation say it; None when there is none."""
        if self.spec.default_text is not None:
            return self.spec.default_text
        value = self.default
        if value is None or value == "" or isinstance(value, bool):
            return None
        text = f"{value:g}" if isinstance(value, float) else str(value)
        words = None
        if self.name.endswith("_bytes"):
            words = _in_units(value, _BYTE_UNITS, (0, 1))
        elif self.name.endswith("_seconds"):
            words = _in_units(value, _SECOND_UNITS, (0,))
        return text if words is None else f"{text} = {words}"

    def bounds_shown(self) -> str:
        """The bounds as the documentation says them; "" when there are none."""
        least, most = self.spec.at_least, self.spec.at_most
        said = [f"at least {least}" if least is not None else "",
                f"at most {most}" if most is not None else ""]  # fmt: skip
        return ", ".join(s for s in said if s)


def declared(settings_class: type) -> tuple[Declared, ...]:
    """Every setting of `settings_class`, in declaration order; TypeError for a field
    declared without its Concern."""
    found = []
    for field in dataclasses.fields(settings_class):
        spec = field.metadata.get(_SPEC)
        if not isinstance(spec, Spec):
            raise TypeError(f"{field.name} is not declared through a Concern")
        found.append(Declared(field.name, str(field.type), field.default, spec))
    return tuple(found)


def _in_units(value: float, units: tuple[tuple[str, int], ...], shortfalls: tuple[int, ...]
              ) -> str | None:  # fmt: skip
    """256 MiB, 2 GiB - 1, 8 days: a value that is a whole number of one of the units (or
    one of `shortfalls` short of it), in the largest such unit; else None."""
    for name, size in units:
        for short in shortfalls:
            count, rest = divmod(value + short, size)
            if count >= 1 and rest == 0:
                said = f"{count:g} {name}" if count > 1 else f"1 {name.removesuffix('s')}"
                return said + (f" - {short}" if short else "")
    return None
