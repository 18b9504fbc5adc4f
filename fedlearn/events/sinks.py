"""Metrics sinks chosen by ``--log KIND:TARGET`` (repeatable): listeners that stream each evaluation's figures
somewhere as the run goes (:data:`SINKS`, one entry each).

An entry's part is a :class:`SinkKind`: what its TARGET must be (checked before any training) and how to open
the listener for a run. ``csv:FILE`` appends one row per evaluation to FILE, flushed as it is written, so an
interrupted run leaves every row so far.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..analysis.stats import fairness
from ..registry import Check, Entry, Flag, Flags, Registry, require
from . import Listener, RunStart


@dataclass(frozen=True)
class SinkKind:
    """How a sink opens for a run (``open(target, flags)``), and why a TARGET cannot be used (None: it can)."""

    open: Callable[[str, Mapping[str, Any]], Listener]
    problem: Callable[[str], str | None]


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


def file_problem(target: str) -> str | None:
    """Why a file cannot be written (or appended to) at ``target``, or None."""
    path = Path(target)
    if path.is_dir():
        return "is a folder, give a file path"
    if path.exists() and not path.is_file():
        return "exists and is not a regular file"
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return f"folder {parent} does not exist"
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return "cannot be written"
    return None


CSV_COLUMNS = ("step", "sim_time", "wall_time_s", "test_accuracy", "test_loss", "train_loss", "samples_trained",
               "client_updates", "bytes_up", "bytes_down", "dp_epsilon", "client_accuracy_mean",
               "client_accuracy_worst_10pct")  # fmt: skip


def _csv_value(value: Any) -> Any:
    """A cell: empty for a figure the run does not have (or that is not finite)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return value


class CsvSink(Listener):
    """One row per evaluation appended to a CSV file (its header first when the file is new or empty)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: io.TextIOBase | None = None

    def on_start(self, run: RunStart) -> None:
        self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if self._file.tell() == 0:
            self._write(CSV_COLUMNS)

    def on_evaluation(self, entry: dict[str, Any]) -> None:
        clients = fairness(entry.get("client_accuracy") or []) or {}
        figures = {**entry, "client_accuracy_mean": clients.get("mean"),
                   "client_accuracy_worst_10pct": clients.get("worst_10pct")}  # fmt: skip
        self._write([_csv_value(figures.get(column)) for column in CSV_COLUMNS])

    def _write(self, row: Any) -> None:
        if self._file is not None:
            csv.writer(self._file).writerow(row)
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


SINKS = SinkRegistry.of(
    "metrics sinks",
    Flag("log", None, str, group="output", action="append", metavar="KIND:TARGET", setting=False, resumable=True,
         older=None,
         help="stream every evaluation's figures as the run goes (repeatable)"),
    [Entry("csv", SinkKind(lambda target, flags: CsvSink(target), file_problem), "FILE (a row per evaluation)")],
    off=None,
)  # fmt: skip
"""Every metrics sink by name (the KIND of ``--log KIND:TARGET``): adding one is a listener and one entry here."""
