"""What watches a run: listeners of its events, and the recorder that makes its history.

A run tells its listeners (:class:`Listener`) when it starts (its settings and facts), when a training loop
starts and advances (batches or client updates), each evaluation as its history entry is made
(:class:`~.recorder.RunRecorder` is the one place entries are made), a status line after it, and the end
(the results document). The Hyperparameters and Results tables (:mod:`.console`), the progress bar
(:mod:`.progress`), the results JSON (:mod:`.results_file`) and the metrics sinks of ``--log``
(:mod:`.sinks`) are listeners; a listener's :meth:`Listener.close` runs however the run ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunStart:
    """A run about to train: its script, every flag's value, the flags the user set, the facts of the run
    (dataset, device, ...: the Hyperparameters table's second part), the client partition if any, and the history
    a resumed run already has."""

    script: str
    flags: Mapping[str, Any]
    given: frozenset[str] = frozenset()
    context: Mapping[str, Any] = field(default_factory=dict)
    partition: Any = None
    history: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class LoopStart:
    """A training loop about to run: its title, how many ``unit``s it counts to, from where (a resumed run),
    and whether it advances by fractions (a federated bar counts client updates, a fraction per batch)."""

    title: str
    total: float
    initial: float = 0
    unit: str = "batch"
    fractional: bool = False


class Listener:
    """Watches a run; override what you need (every method does nothing here)."""

    def on_start(self, run: RunStart) -> None:
        """Before training: the run's settings and facts."""

    def on_loop(self, loop: LoopStart) -> None:
        """A training loop starts."""

    def on_progress(self, units: float) -> None:
        """The loop advanced by ``units`` (batches, or client updates)."""

    def on_evaluation(self, entry: dict[str, Any]) -> None:
        """A history entry was made (the same dictionary the results JSON's history holds)."""

    def on_status(self, text: str) -> None:
        """Where the loop is and its last figures, e.g. ``round 3/5 acc 81.20% loss 0.5310``."""

    def on_loop_end(self) -> None:
        """The training loop ended."""

    def on_end(self, document: dict[str, Any]) -> None:
        """The run finished: its results document (what ``--save`` writes)."""

    def close(self) -> None:
        """The run is over, finished or not: release what the listener holds (files, the bar)."""


class Events(Listener):
    """Tells each of ``listeners`` every event, in order; closes all of them even if one fails."""

    def __init__(self, listeners: Iterable[Listener] = ()) -> None:
        self.listeners = list(listeners)

    def on_start(self, run: RunStart) -> None:
        for listener in self.listeners:
            listener.on_start(run)

    def on_loop(self, loop: LoopStart) -> None:
        for listener in self.listeners:
            listener.on_loop(loop)

    def on_progress(self, units: float) -> None:
        for listener in self.listeners:
            listener.on_progress(units)

    def on_evaluation(self, entry: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener.on_evaluation(entry)

    def on_status(self, text: str) -> None:
        for listener in self.listeners:
            listener.on_status(text)

    def on_loop_end(self) -> None:
        for listener in self.listeners:
            listener.on_loop_end()

    def on_end(self, document: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener.on_end(document)

    def close(self) -> None:
        errors = []
        for listener in self.listeners:
            try:
                listener.close()
            except Exception as exc:  # noqa: BLE001 - every listener is closed; the first failure is raised after
                errors.append(exc)
        if errors:
            raise errors[0]
