"""Flags given as Python values (the library entry :func:`fedlearn.run`) checked and converted as the command
line's parser would: a name the script does not have, a value of the wrong type or outside a flag's choices is
one :class:`~fedlearn.errors.UsageError` naming the flag."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from ..errors import UsageError
from ..registry import Flag
from .parser import DESCRIPTIONS
from .status import all_flags


def _coerce(flag: Flag, value: Any) -> Any:
    """``value`` as the flag's type (an int for an int flag, a float for a float one, ...)."""
    if value is None:
        if flag.switch:
            raise UsageError(f"--{flag.name}: expected True or False, got None")
        return None
    if flag.switch:
        if not isinstance(value, bool):
            raise UsageError(f"--{flag.name}: expected True or False, got {value!r}")
        return value
    if flag.action == "append":
        items = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
        if items is None or not all(isinstance(item, str) for item in items):
            raise UsageError(f"--{flag.name}: expected a string or a list of strings, got {value!r}")
        return items
    if flag.type is int and not (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
        raise UsageError(f"--{flag.name}: expected an integer, got {value!r}")
    if flag.type is float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise UsageError(f"--{flag.name}: expected a number, got {value!r}")
    if flag.type is str and not isinstance(value, str):
        raise UsageError(f"--{flag.name}: expected a string, got {value!r}")
    converted = flag.type(value) if flag.type in (int, float) else value
    if flag.choices is not None and converted not in flag.choices:
        raise UsageError(f"--{flag.name}: invalid choice {value!r} (choose from {', '.join(flag.choices)})")
    return converted


def coerce_flags(script: str, given: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """Every flag of ``script``: its default, or the value ``given`` (checked and converted); with the names of
    the flags given away from their defaults."""
    if script not in DESCRIPTIONS:
        raise UsageError(f"unknown script {script!r}; choose from {', '.join(DESCRIPTIONS)}")
    flags = {flag.name: flag for flag in all_flags(script)}
    unknown = sorted(set(given) - set(flags))
    if unknown:
        raise UsageError(f"{script} has no flag --{unknown[0]}")
    values = {name: flag.default for name, flag in flags.items()}
    changed = set()
    for name, value in given.items():
        values[name] = _coerce(flags[name], value)
        if values[name] != flags[name].default:
            changed.add(name)
    return values, frozenset(changed)
