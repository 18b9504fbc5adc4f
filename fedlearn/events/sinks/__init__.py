"""Metrics sinks chosen by ``--log KIND:TARGET`` (repeatable): listeners that stream each evaluation's figures
somewhere as the run goes (:data:`SINKS`, one entry each, one module each: :mod:`.csvfile`, :mod:`.tensorboard`).

An entry's part is a :class:`~.common.SinkKind`: what its TARGET must be (checked before any training) and how to
open the listener for a run. Sinks are opened by the server's process alone (``--workers``, ``--distributed``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ...registry import Check, Entry, Flag, Flags, Registry, require
from .. import Listener
from .common import SinkKind, file_problem
from .csvfile import CsvSink
from .tensorboard import TensorBoardSink
from .tensorboard import problem as tensorboard_problem


def parse_log(spec: str) -> tuple[str, str]:
    """``csv:runs/a.csv`` -> ``("csv", "runs/a.csv")`` (UsageError naming ``--log`` when malformed or unknown)."""
    kind, sep, target = spec.partition(":")
    require(bool(sep and kind), f"--log {spec!r}: expected KIND:TARGET, e.g. csv:metrics.csv")
    require(kind in SINKS, f"--log {spec!r}: unknown kind {kind!r}; choose from {', '.join(SINKS) or 'none'}")
    require(bool(target), f"--log {spec!r}: the {kind} sink needs a TARGET after the colon")
    return kind, target


@dataclass(frozen=True)
class SinkRegistry(Registry):
    """A registry whose selector is repeated: each ``--log KIND:TARGET`` chooses one entry, with its target."""

    def selector_flag(self) -> Flag:
        """``--log``, which takes KIND:TARGET values rather than entry names."""
        kinds = ", ".join(f"{name}:{entry.help}" for name, entry in self.entries.items())
        return replace(self.selector, help=f"{self.selector.help}; kinds: {kinds}")

    def targets(self, flags: Flags) -> list[tuple[Entry, str]]:
        """Every sink the run asks for, with its target (after :func:`parse_log`'s checks)."""
        out = []
        for spec in flags.get(self.selector.name) or ():
            kind, target = parse_log(spec)
            problem = self.entries[kind].part.problem(target)
            require(problem is None, f"--log {spec}: {problem}")
            out.append((self.entries[kind], target))
        return out

    def chosen(self, flags: Flags) -> Entry | None:
        return None

    def checks(self, flags: Flags) -> Iterator[Check]:
        """Every ``--log`` parsed and its target checked, then each chosen kind's own check."""
        yield lambda flags, script: self.targets(flags) and None
        seen: set[str] = set()
        for entry, _ in self.targets(flags):
            if entry.check is not None and entry.name not in seen:
                seen.add(entry.name)
                yield entry.check

    def is_off(self, flags: Flags) -> bool:
        return not flags.get(self.selector.name)

    def shown(self, flags: Flags) -> Iterator[str]:
        """``--log``, and the flags of the sinks it names."""
        yield self.selector.name
        names = {spec.partition(":")[0] for spec in flags.get(self.selector.name) or ()}
        for name in names & set(self.entries):
            yield from (f.name for f in self.entries[name].flags if f.headline)


def open_sinks(flags: Mapping[str, Any]) -> list[Listener]:
    """The listeners of every ``--log`` of a run."""
    return [entry.part.open(target, flags) for entry, target in SINKS.targets(Flags(flags))]


SINKS = SinkRegistry.of(
    "metrics sinks",
    Flag("log", None, str, group="output", action="append", metavar="KIND:TARGET", setting=False, resumable=True,
         older=None,
         help="stream every evaluation's figures as the run goes (repeatable)"),
    [
        Entry("csv", SinkKind(lambda target, flags: CsvSink(target), file_problem),
              "FILE (a row per evaluation; the settings in FILE's .settings.json)"),
        Entry("tensorboard", SinkKind(lambda target, flags: TensorBoardSink(target), tensorboard_problem),
              "DIR (event files, a folder per run)"),
    ],
    off=None,
)  # fmt: skip
"""Every metrics sink by name (the KIND of ``--log KIND:TARGET``): adding one is a listener and one entry here."""


__all__ = ["SINKS", "SinkKind", "open_sinks", "parse_log"]
