"""The `serve` flags, one per setting, grouped by concern: derived from the declaration, so a
flag, its variable and its default cannot disagree with what the gateway reads."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from gateway.settings.declaration import Settings
from gateway.settings.schema import Concern, Declared, declared

__all__ = ["add_setting_flags"]


def add_setting_flags(parser: argparse.ArgumentParser) -> dict[Concern, argparse._ArgumentGroup]:
    """A flag for every setting, in a group per concern (returned, for flags that are not
    settings); a flag not given leaves its setting to the environment (its value is None)."""
    groups: dict[Concern, argparse._ArgumentGroup] = {}
    for setting in declared(Settings):
        concern = setting.spec.concern
        if concern not in groups:
            groups[concern] = parser.add_argument_group(concern.title)
        _add_flag(groups[concern], setting)
    return groups


def _add_flag(group: argparse._ArgumentGroup, setting: Declared) -> None:
    shown = setting.default_shown()
    help_text = setting.spec.help if shown is None else f"{setting.spec.help} (default {shown})"
    help_text += f" [env {setting.env}]"
    if setting.kind == "bool":
        action = "store_false" if setting.default else "store_true"
        group.add_argument(setting.flag, dest=setting.name, action=action, default=None,
                           help=help_text)  # fmt: skip
        return
    group.add_argument(
        setting.flag, dest=setting.name, type=_flag_type(setting),
        choices=setting.spec.choices or None, help=help_text,
    )  # fmt: skip


def _flag_type(setting: Declared) -> Callable[[str], object]:
    """Argparse's converter for the setting's flag: it names the type when a value is not one
    ("invalid int value"), so the function carries the type's name."""

    def convert(raw: str) -> object:
        return setting.parse(raw)

    convert.__name__ = setting.kind + (' or "auto"' if setting.spec.auto else "")
    return convert
