"""Resolving and checking a script's flags: the defaults that depend on other flags, each flag's valid values,
then every part's checks across flags (the first failure is one :class:`~fedlearn.errors.UsageError` naming the
flag)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from ..registry import MAX_COUNT, Flags, Registry, require
from .flags import DECLARERS
from .status import all_flags


def check_choices(flags: Mapping[str, Any], script: str) -> None:
    """The parts the flags name exist (a user's part too: its module, file or function is found), before any
    default is derived from them."""
    view = Flags(flags)
    for owner in DECLARERS:
        if isinstance(owner, Registry) and owner.resolve is not None and script in owner.selector.scripts:
            owner.check_choice(view, script)


def resolve_defaults(flags: Mapping[str, Any], script: str) -> dict[str, Any]:
    """A copy of ``flags`` with the defaults that depend on other flags filled in (each declared by its flag:
    ``--model`` and ``--augment`` from ``--dataset``, ``--gar_f`` from ``--byzantine``, ``--server_lr`` from
    ``--server_opt``; run_async's ``--staleness_a``, ``--concurrency``, ``--max_updates``, ``--eval_every``)."""
    resolved = dict(flags)
    pending = [flag for flag in all_flags(script) if flag.derive is not None and resolved.get(flag.name) is None]
    while pending:
        waiting = {flag.name for flag in pending}
        ready = [flag for flag in pending if not waiting & set(flag.after)] or pending[:1]
        for flag in ready:
            resolved[flag.name] = flag.derive(Flags(resolved), script)
        pending = [flag for flag in pending if flag not in ready]
    return resolved


def _check_value(name: str, value: Any, count: bool, valid: Any) -> None:
    if value is None:
        return
    if count:
        require(1 <= value <= MAX_COUNT, f"--{name} must be a positive integer up to {MAX_COUNT:.0e}, got {value}")
    if valid is not None:
        require(value in valid, f"--{name} must be in {valid}, got {value}")


def validate(flags: Mapping[str, Any], script: str, given: Collection[str] = ()) -> None:
    """Check every (resolved) flag value of ``script``: each one's range, then every part's checks in the order
    of :data:`~.flags.DECLARERS`; raise UsageError naming the flag on the first bad one."""
    for flag in all_flags(script):
        if flag.action != "append":
            _check_value(flag.name, flags.get(flag.name), flag.count, flag.valid)
    view = Flags(flags, frozenset(given))
    for owner in DECLARERS:
        if any(script in flag.scripts for flag in owner.declared()):
            for check in owner.checks(view):
                check(view, script)
