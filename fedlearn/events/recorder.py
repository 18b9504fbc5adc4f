"""A run's evaluation history and final figures, as plain dictionaries (the JSON contract): the one place a
history entry is made, and its listeners told."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..analysis.stats import fairness
from ..core.timing import Stopwatch
from ..core.training import EvalResult
from . import Listener

TIME_SECTIONS = ("training", "aggregation", "evaluation")


class RunRecorder:
    """Collects one history entry per evaluation and builds the ``final`` summary.

    Wall time is measured from construction (the start of training), so it
    includes local training, aggregation and evaluation, not data loading.
    With ``target_accuracy``, the first entry that reaches it is kept as the
    run's time to accuracy. ``watch`` times the loop's sections (local
    training, server aggregation, evaluation); the rest is reported as other.
    Each new entry is completed by the ``annotators`` (say, the privacy loss
    by then) and then given to ``events`` (:class:`fedlearn.events.Listener`).
    """

    def __init__(
        self,
        target_accuracy: float | None = None,
        events: Listener | None = None,
        annotators: Sequence[Callable[[dict[str, Any]], None]] = (),
    ) -> None:
        self._start = time.perf_counter()
        self.history: list[dict[str, Any]] = []
        self.target_accuracy = target_accuracy
        self.reached: dict[str, Any] | None = None
        self.watch = Stopwatch()
        self.events = events or Listener()
        self.annotators = tuple(annotators)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the record: history, elapsed time and the time sections."""
        return {"history": self.history, "elapsed_s": self.elapsed(), "sections_s": dict(self.watch.totals)}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue a record saved by :meth:`state`: wall time and sections carry on from where it stopped."""
        self.history = list(state["history"])
        for entry in self.history:  # entries saved before an annotator existed get its figures too
            self._annotate(entry)
        self._start = time.perf_counter() - float(state["elapsed_s"])
        self.watch.totals.update(state["sections_s"])
        if self.target_accuracy is not None:
            self.reached = next((e for e in self.history if e["test_accuracy"] >= self.target_accuracy), None)

    def elapsed(self) -> float:
        """Seconds since training started."""
        return time.perf_counter() - self._start

    def record(
        self,
        step: int,
        evaluation: EvalResult,
        *,
        sim_time: float | None,
        samples_trained: int,
        client_updates: int | None,
        train_loss: float,
        **extra: Any,
    ) -> dict[str, Any]:
        """Append and return one history entry (``extra``: script-specific keys)."""
        wall = self.elapsed()
        entry = {
            "step": step,
            "sim_time": sim_time,
            "wall_time_s": wall,
            "test_accuracy": evaluation.accuracy,
            "test_loss": evaluation.loss,
            "train_loss": train_loss,
            "samples_trained": samples_trained,
            "client_updates": client_updates,
            "time_breakdown_s": self._breakdown(wall),  # cumulative up to this evaluation
            **extra,
        }
        self._annotate(entry)
        self.history.append(entry)
        if self.reached is None and self.target_accuracy is not None and evaluation.accuracy >= self.target_accuracy:
            self.reached = entry
        self.events.on_evaluation(entry)
        return entry

    def _annotate(self, entry: dict[str, Any]) -> None:
        for annotate in self.annotators:
            annotate(entry)

    def _breakdown(self, wall: float) -> dict[str, float]:
        seconds = {name: self.watch.totals.get(name, 0.0) for name in TIME_SECTIONS}
        seconds["other"] = max(wall - sum(seconds.values()), 0.0)
        return seconds

    def final(self) -> dict[str, Any]:
        """The contract's ``final`` block: last evaluation, totals, best accuracy seen."""
        if not self.history:
            raise RuntimeError("no evaluation was recorded")
        last = self.history[-1]
        wall = self.elapsed()
        return {
            "test_accuracy": last["test_accuracy"],
            "test_loss": last["test_loss"],
            "wall_time_s": wall,
            "sim_time": last["sim_time"],
            "samples_trained": last["samples_trained"],
            "client_updates": last["client_updates"],
            **{key: last[key] for key in ("bytes_up", "bytes_down") if key in last},
            "best_test_accuracy": max(e["test_accuracy"] for e in self.history),
            "steps": last["step"],
            "time_breakdown_s": self._breakdown(wall),
            "target_accuracy": self.target_accuracy,
            "diverged": divergence(self.history),
            **_client_summary(last.get("client_accuracy")),
            **_client_summary(last.get("personal_client_accuracy"), "personal_client_accuracy"),
            "time_to_target": None
            if self.reached is None
            else {
                key: self.reached[key]
                for key in (
                    "step",
                    "sim_time",
                    "wall_time_s",
                    "client_updates",
                    "samples_trained",
                    "bytes_up",
                    "bytes_down",
                )
                if key in self.reached
            },
        }


def divergence(history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The first evaluation whose test loss or simulated time is not finite (its ``step`` and ``why``), or None: a
    run that diverged says so instead of leaving a silent null in its figures."""
    for entry in history:
        loss, clock = entry["test_loss"], entry["sim_time"]
        if loss is None or not math.isfinite(loss):
            return {"step": entry["step"], "why": f"the test loss became {loss if loss is not None else 'nan'} (the "
                    "model's outputs are no longer finite: try a smaller --init_lr or --server_lr)"}  # fmt: skip
        if clock is not None and not math.isfinite(clock):
            return {"step": entry["step"], "why": f"the simulated time became {clock} (a rate too small to send or "
                    "train in finite time)"}  # fmt: skip
    return None


def _client_summary(accuracies: list[float | None] | None, key: str = "client_accuracy") -> dict[str, Any]:
    """The ``final`` block's ``client_accuracy`` (or, personalized, ``personal_client_accuracy``): fairness figures
    over the clients' own test sets, and each client's."""
    figures = fairness(accuracies) if accuracies else None
    return {} if figures is None else {key: {**figures, "per_client": accuracies}}
