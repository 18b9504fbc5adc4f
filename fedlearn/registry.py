"""One registry type behind every extension point: a name -> entry table whose entries declare their own flags.

An extension point (datasets, models, partitions, codecs, local algorithms, rules, server steps, metrics
sinks, ...) is a :class:`Registry`: a selector flag (``--model``, ``--partition``, ...) whose choices are the
entries, the flags every entry shares, and a check across flags. An :class:`Entry` is one part: what it builds,
a line of ``--help``, the flags only it uses, its own check, and a kind-specific description (``info``: a
dataset's input shape, a model's accepted inputs). A :class:`FlagSet` declares flags and a check without
choices (client-level DP, processes and checkpoints). Each :class:`Flag` says how it parses, its valid values,
its ``--help`` group, and its status: a setting that tells runs apart or an output option, whether a resumed
run may change it, and the value runs saved before it existed had. The parser, the validation, the
Hyperparameters table, run grouping and checkpoint identity are all derived from these declarations
(:mod:`fedlearn.config`); nothing outside a part's module names its flags.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import UsageError

SCRIPTS = ("run_baseline", "run_federated", "run_async")
FEDERATED_SCRIPTS = ("run_federated", "run_async")
MAX_COUNT = 10**12
"""The largest value of a flag that counts something: every key and counter then fits in int64."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""A flag's ``older`` when runs saved before it have nothing to say (the flag is as old as saved runs)."""


@dataclass(frozen=True)
class Range:
    """The values a number flag accepts: ``low`` to ``high``, each end closed unless said open."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    or_zero: bool = False  # 0 is valid too (it means "off"), below ``low``

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return (self.or_zero and value == 0) or (math.isfinite(value) and above and below)

    def __str__(self) -> str:
        low, high = (str(end) if isinstance(end, int) else f"{end:g}" for end in (self.low, self.high))
        ends = f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        return f"{ends} or 0" if self.or_zero else ends


class Flags:
    """A read-only view of resolved flag values, by attribute and by key (checks never change a flag);
    ``given``: the flags the user set (the others hold their defaults)."""

    def __init__(self, values: Mapping[str, Any], given: frozenset[str] = frozenset()) -> None:
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "given", given)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name``, or ``default`` when the script has no such flag."""
        return self._values.get(name, default)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("flags are read-only")


Check = Callable[[Flags, str], None]
"""A check across flags: given the resolved flags and the script, raises UsageError naming a flag."""
Derive = Callable[[Flags, str], Any]
"""A default that depends on other flags (used when the flag's value is None)."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`UsageError` with ``message`` unless ``condition``."""
    if not condition:
        raise UsageError(message)


@dataclass(frozen=True)
class Flag:
    """One command-line flag, declared by the part it belongs to.

    ``type`` parses the text (None with ``default=False``: a switch); ``valid`` bounds a number, ``count``
    makes it a positive integer up to :data:`MAX_COUNT`; ``derive`` fills a None value from other flags (after
    those named in ``after`` are filled).
    ``scripts``: the scripts whose parser has it; ``federated``: run_baseline accepts it but acts on it only
    when its clients hold out test sets (partition flags) or never; ``unused_by``: other scripts that accept it
    and never act on it. Status: ``setting`` (False: it only says
    where files go or what is shown, so it never tells two runs apart), ``resumable`` (a resumed run may
    change it), ``older`` (what runs saved before the flag existed did), ``headline`` (shown in the
    Hyperparameters table whenever its part is in use; else only when set away from its default)."""

    name: str
    default: Any = None
    type: Callable[[str], Any] | None = None
    help: str = ""
    choices: tuple[str, ...] | None = None
    valid: Range | None = None
    count: bool = False
    metavar: str | None = None
    action: str | None = None  # "append": repeatable
    derive: Derive | None = None
    after: tuple[str, ...] = ()  # flags whose value ``derive`` reads and which are derived too
    group: str = "training"
    scripts: tuple[str, ...] = SCRIPTS
    federated: bool = False
    unused_by: tuple[str, ...] = ()
    setting: bool = True
    resumable: bool = False
    older: Any = MISSING
    headline: bool = True

    @property
    def switch(self) -> bool:
        """Whether the flag takes no value (``--flag`` sets it)."""
        return self.type is None and self.default is False


@dataclass(frozen=True)
class FlagSet:
    """Flags and a check across them that belong together but choose no entry (client-level DP, processes).

    ``scripts``: the scripts that act on the part; ``active(flags, script)``: whether a run of one of them uses it
    (its flags are then shown in the Hyperparameters table)."""

    name: str
    flags: tuple[Flag, ...] = ()
    check: Check | None = None
    active: Callable[[Flags, str], bool] = lambda flags, script: True
    scripts: tuple[str, ...] = SCRIPTS

    def in_use(self, flags: Flags, script: str) -> bool:
        """Whether a run of ``script`` with ``flags`` uses the part."""
        return script in self.scripts and self.active(flags, script)

    def declared(self) -> Iterator[Flag]:
        """Every flag it declares."""
        yield from self.flags

    def checks(self, flags: Flags) -> Iterator[Check]:
        """The checks a run with ``flags`` must pass."""
        if self.check is not None:
            yield self.check

    def shown(self, flags: Flags) -> Iterator[str]:
        """The flags the Hyperparameters table shows while the part is in use."""
        yield from (f.name for f in self.flags if f.headline)


@dataclass(frozen=True)
class Entry:
    """One part of an extension point: ``part`` is what it builds or is (a factory, a class, a function),
    ``help`` a phrase for ``--help``, ``flags`` the flags only it uses, ``uses`` the registry's shared flags it
    uses (shown with it), ``check`` its own check across flags, ``info`` what it describes of itself."""

    name: str
    part: Any = None
    help: str = ""
    flags: tuple[Flag, ...] = ()
    uses: tuple[str, ...] = ()
    check: Check | None = None
    info: Any = None

    def own(self, flags: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The values of the flags the entry declares, from ``flags`` (their defaults where a flag is absent):
        what a model's or a dataset's factory is given as keywords."""
        return {f.name: flags[f.name] if flags is not None and f.name in flags else f.default for f in self.flags}


@dataclass(frozen=True)
class Registry(FlagSet):
    """An extension point: ``selector`` chooses one of ``entries`` by name; ``flags`` are shared by the entries;
    ``check`` runs for every choice, then the chosen entry's own. ``off``: the entry meaning "not used"
    (``--compress none``): the registry's flags are then left out of the Hyperparameters table. ``resolve``: how
    a value that names no entry but a user's part (``MODULE:FUNCTION``, ``FILE.npz``) becomes an entry (None when
    it is no such value; UsageError naming the flag when it cannot be used); ``spec``: such values in words."""

    selector: Flag | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    off: str | None = None
    extra_choices: tuple[str, ...] = ()  # choices that are not entries (``--dataset auto``)
    resolve: Callable[[str], Entry | None] | None = None
    spec: str = ""

    def __post_init__(self) -> None:
        if self.selector is None:
            raise ValueError(f"registry {self.name} needs a selector flag")

    @classmethod
    def of(cls, name: str, selector: Flag, entries: Iterable[Entry], **options: Any) -> Registry:
        """A registry named ``name`` chosen by ``selector``, holding ``entries`` in order."""
        return cls(name=name, selector=selector, entries={e.name: e for e in entries}, **options)

    def __getitem__(self, name: str) -> Entry:
        entry = self.entry(name)
        if entry is None:
            raise KeyError(name)
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def choices(self) -> tuple[str, ...]:
        """The selector's valid values: the extra choices, then every entry's name."""
        return (*self.extra_choices, *self.entries)

    def selector_flag(self) -> Flag:
        """The selector with its choices filled in from the entries (none to enforce when users' parts are
        accepted too: the registry's check says then what a value may be)."""
        if self.resolve is None:
            return replace(self.selector, choices=self.choices())
        return replace(self.selector, metavar=f"{{{','.join(self.choices())}}} or {self.spec}")

    def entry(self, name: str | None) -> Entry | None:
        """The entry ``name`` chooses: a registered one, or a user's part it names (None: neither)."""
        if name in self.entries:
            return self.entries[name]
        if self.resolve is None or name is None or name in self.extra_choices:
            return None
        return self.resolve(name)

    def chosen(self, flags: Flags) -> Entry | None:
        """The entry the run's flags choose (None for a choice that is not an entry, or an unknown name)."""
        return self.entry(flags.get(self.selector.name))

    def check_choice(self, flags: Flags, script: str) -> None:
        """The selector's value names an entry, an extra choice or (a registry with a resolver) a user's part:
        argparse checks the first two; a registry that accepts users' parts checks its selector's value here."""
        name = self.selector.name
        value = flags.get(name)
        if value is None:  # derived from other flags (and checked by the part that derives it)
            return
        require(
            value in self.extra_choices or self.entry(value) is not None,
            f"--{name}: invalid choice {value!r} (choose from {', '.join(self.choices())}, or give {self.spec})",
        )

    def declared(self) -> Iterator[Flag]:
        """The selector, the shared flags, then each entry's own."""
        yield self.selector_flag()
        yield from self.flags
        for entry in self.entries.values():
            yield from entry.flags

    def checks(self, flags: Flags) -> Iterator[Check]:
        """The selector's value (for a registry that accepts users' parts), the registry's check, then the chosen
        entry's."""
        if self.resolve is not None:
            yield self.check_choice
        yield from super().checks(flags)
        entry = self.chosen(flags)
        if entry is not None and entry.check is not None:
            yield entry.check

    def is_off(self, flags: Flags) -> bool:
        """Whether the run chose the "not used" entry."""
        return self.off is not None and flags.get(self.selector.name) == self.off

    def in_use(self, flags: Flags, script: str) -> bool:
        """Whether a run of ``script`` uses the part: it acts on it, and did not choose the "not used" entry."""
        return super().in_use(flags, script) and not self.is_off(flags)

    def shown(self, flags: Flags) -> Iterator[str]:
        """The selector, the shared headline flags, and the chosen entry's flags."""
        yield self.selector.name
        yield from super().shown(flags)
        entry = self.chosen(flags)
        if entry is not None:
            yield from entry.uses
            yield from (f.name for f in entry.flags if f.headline)

    def add(self, entry: Entry) -> None:
        """Register ``entry`` (its name must be new)."""
        if entry.name in self.entries or entry.name in self.extra_choices:
            raise ValueError(f"{self.name}: {entry.name!r} is already registered")
        self.entries[entry.name] = entry

    @contextlib.contextmanager
    def registered(self, entry: Entry) -> Iterator[Entry]:
        """``entry`` registered for the duration of a ``with`` block (a plug-in tried in a test or a script)."""
        self.add(entry)
        try:
            yield entry
        finally:
            del self.entries[entry.name]
