"""The rows of the settings table and how a raw environment string is read for a row.

Each ``Setting`` is derived from one field of ``settings.Settings`` (``row_of``): the
variable's name, its default as one would type it, its kind, its help and its bounds.
``parse`` converts a raw string by the rules of its row, stricter than pydantic's lax
mode ("1e3" is not an int, "nan" is not a number, "off" is false, paths are expanded);
a bad value raises ``SettingsError`` naming the variable. ``settings.py`` builds the
table (``SETTINGS``) from its fields; nothing here knows the fields themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from annotated_types import BaseMetadata, Ge, Le
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from .networks import AddressPolicy

Kind = Literal["str", "int", "float", "path", "bool", "secret", "networks", "choice"]


class SettingsError(ValueError):
    """A setting has a value vfe cannot use; the message names the variable."""


def one_of(choices: Iterable[str]) -> str:
    """``"A, B or C"``."""
    *rest, last = choices
    return f"{', '.join(rest)} or {last}" if rest else last


@dataclass(frozen=True)
class Setting:
    """One setting as a user sees it, derived from a field of ``Settings``: the variable,
    its default as one would type it, and the rules ``parse`` applies to a raw value."""

    name: str
    default: str
    kind: Kind
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()  # kind "choice" only


_KINDS: dict[object, Kind] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    Path: "path",
    SecretStr: "secret",
    AddressPolicy: "networks",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _render(value: object) -> str:
    """A default as a user would type it in the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


def row_of(name: str, info: FieldInfo) -> Setting:
    """The ``Setting`` of one field; a field the loader could not read stops the import."""
    annotation = info.annotation
    choices: tuple[str, ...] = ()
    if get_origin(annotation) is Literal:
        kind: Kind = "choice"
        choices = tuple(str(choice) for choice in get_args(annotation))
    elif annotation in _KINDS:
        kind = _KINDS[annotation]
    else:
        raise TypeError(f"Settings.{name}: no rule to read a {annotation!r} from a string")
    if not info.description:
        raise TypeError(f"Settings.{name}: every setting needs a description (its help)")
    minimum = maximum = None
    for rule in info.metadata:
        if isinstance(rule, Ge) and isinstance(rule.ge, int | float):
            minimum = rule.ge
        elif isinstance(rule, Le) and isinstance(rule.le, int | float):
            maximum = rule.le
        elif isinstance(rule, BaseMetadata):  # gt, lt, min_length...: the loader has no rule
            raise TypeError(f"Settings.{name}: give bounds as numbers with ge= and le=")
    return Setting(
        name.upper(), _render(info.default), kind, info.description, minimum, maximum, choices
    )


def parse(setting: Setting, raw: str) -> Any:
    """Convert one raw environment string by the rules of its setting."""
    name = setting.name
    value: Any
    if setting.kind == "str":
        value = raw.strip()
        if not value and setting.default:  # settings that default to empty may be empty
            raise SettingsError(f"{name} must not be empty")
        return value
    if setting.kind == "secret":
        return SecretStr(raw.strip())
    if setting.kind == "networks":
        try:
            return AddressPolicy.parse(raw)
        except ValueError as exc:
            raise SettingsError(str(exc) if name in str(exc) else f"{name}: {exc}") from None
    if setting.kind == "path":
        if not raw.strip():
            raise SettingsError(f"{name} must not be empty")
        return Path(raw.strip()).expanduser().resolve()
    if setting.kind == "bool":
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    if setting.kind == "choice":
        by_word = {choice.lower(): choice for choice in setting.choices}
        if (choice := by_word.get(raw.strip().lower())) is None:
            raise SettingsError(f"{name} must be {one_of(setting.choices)}, got {raw!r}")
        return choice
    try:
        value = int(raw.strip()) if setting.kind == "int" else float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number ({setting.kind}), got {raw!r}") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, got {raw!r}")
    if setting.minimum is not None and value < setting.minimum:
        raise SettingsError(f"{name} must be at least {setting.minimum:g}, got {raw!r}")
    if setting.maximum is not None and value > setting.maximum:
        raise SettingsError(f"{name} must be at most {setting.maximum:g}, got {raw!r}")
    return value
