"""The flag-status table, derived from what every part declares (:mod:`fedlearn.registry`):

- which flags are settings (they tell runs apart when grouping results) and which only say where files go or
  what is shown;
- which flags a resumed run may change;
- what runs saved before a flag existed did (so they still group with, and resume as, today's runs);
- which flags the Hyperparameters table shows for a run.

Everything is computed from the live declarations, so a plug-in's flags get their status without an edit here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from ..registry import MISSING, Flag, Flags, FlagSet
from .flags import DECLARERS, GROUPS


def declared(script: str | None = None) -> Iterator[tuple[FlagSet, Flag]]:
    """Every declared flag (of ``script``'s parser, if given) with the part that declares it, in help order."""
    pairs = [(owner, flag) for owner in DECLARERS for flag in owner.declared()]
    order = {key: i for i, key in enumerate(GROUPS)}
    pairs.sort(key=lambda pair: order.get(pair[1].group, len(order) - 1.5))  # stable: declaration order within
    for owner, flag in pairs:
        if script is None or script in flag.scripts:
            yield owner, flag


def all_flags(script: str | None = None) -> list[Flag]:
    """Every declared flag (of ``script``'s parser, if given), in help order."""
    return [flag for _, flag in declared(script)]


def not_settings() -> frozenset[str]:
    """Flags that change no figure of a run (where files go, what is shown, how to resume), and the seed, which
    is the axis runs are grouped along."""
    return frozenset({"seed"} | {flag.name for flag in all_flags() if not flag.setting})


def resumable(script: str | None = None) -> frozenset[str]:
    """Flags that may differ between a run and its resumption (they do not change the numbers), with those
    ``script`` accepts but never uses (run_federated's ``--epoch``)."""
    return frozenset(flag.name for flag in all_flags() if flag.resumable or script in flag.unused_by)


def older_values() -> dict[str, Any]:
    """Flags added after runs were saved: the value each takes in an older results file or checkpoint that lacks
    it (what those runs did)."""
    return {flag.name: flag.older for flag in all_flags() if flag.older is not MISSING}


def with_older_values(args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` (a saved run's flags) with every later flag it lacks set to what the run did."""
    return {**older_values(), **args}


def baseline_ignores() -> frozenset[str]:
    """The flags run_baseline accepts but acts on only when its clients hold out test sets, or never."""
    return frozenset(flag.name for flag in all_flags("run_baseline") if flag.federated)


def shown_flags(flags: Mapping[str, Any], given: Collection[str], script: str) -> list[str]:
    """The flags a run's Hyperparameters table shows, in help order: the headline flags of every part the run
    uses (a part "not used", such as ``--compress none``, shows its selector alone), and every flag set away
    from its default."""
    view, names = Flags(flags), set(given)
    for owner in DECLARERS:
        if owner.in_use(view, script):
            names.update(owner.shown(view))
    unused = {flag.name for flag in all_flags(script) if script in flag.unused_by and flag.name not in given}
    return [flag.name for flag in all_flags(script) if flag.name in names - unused and flag.name in flags]


def group_of(name: str) -> str:
    """The ``--help`` group key of flag ``name``."""
    return next(flag.group for flag in all_flags() if flag.name == name)
