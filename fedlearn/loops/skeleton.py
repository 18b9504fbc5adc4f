"""What every server loop shares: the record, the tallies, evaluation, the progress bar, checkpoints, resumption.

A loop (:mod:`.rounds`, :mod:`.virtual_clock`, the distributed asynchronous
server) keeps only what differs: who trains next and when the server steps.
It counts each update it receives in :attr:`RunState.tally`, calls
:meth:`RunState.evaluate` when its cadence says so and :meth:`RunState.finish`
at the end, and :meth:`RunState.checkpoint` after each step with its own fields;
the schema every checkpoint is checked against on resumption is
:func:`fedlearn.core.checkpoint.checkpoint_schema`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.checkpoint import Checkpointing, save_checkpoint
from ..core.flat import set_flat
from ..core.training import ClientTests, EvalResult, evaluate
from ..data import Dataset
from ..events import Listener, LoopStart
from ..events.progress import ProgressBar
from ..events.recorder import RunRecorder


@dataclass(frozen=True)
class LoopOptions:
    """What every loop is told besides its budget: the seed, the target accuracy, checkpoints, the clients' test
    sets, who watches (``events``; without any, a progress bar when ``show_progress``) and what completes each
    history entry (``annotators``)."""

    seed: int = 0
    target_accuracy: float | None = None
    show_progress: bool = True
    checkpointing: Checkpointing | None = None
    resume: dict[str, Any] | None = None  # a loaded checkpoint to continue from
    client_tests: ClientTests | None = None  # every client's held-out set (--client_test_frac)
    events: Listener | None = None
    annotators: tuple[Callable[[dict[str, Any]], None], ...] = ()
    personal: Callable[[torch.Tensor, int], list[float | None]] | None = None  # clients' personalized accuracies

    def listeners(self) -> Listener:
        """Who watches the loop: ``events``, else a progress bar if asked, else nobody."""
        if self.events is not None:
            return self.events
        return ProgressBar() if self.show_progress else Listener()

    def recorder(self, events: Listener) -> RunRecorder:
        """A new record of the run, telling ``events`` of each entry."""
        return RunRecorder(self.target_accuracy, events, self.annotators)


@dataclass
class Tally:
    """A loop's running figures: updates received, samples trained, bytes moved, and the training loss since the
    last evaluation."""

    arrivals: int = 0
    samples_trained: int = 0
    accepted_since_eval: int = 0
    loss_sum: float = 0.0  # sum of jobs' mean training loss times their samples, since the last evaluation
    loss_samples: int = 0
    bytes_up: int = 0  # what the clients of the updates received sent (as encoded)
    bytes_down: int = 0  # what they were sent (the model, float32; SCAFFOLD's control variate too)

    FIELDS = ("arrivals", "samples_trained", "accepted_since_eval", "loss_sum", "loss_samples", "bytes_up",
              "bytes_down")  # fmt: skip

    def count(self, samples: int, mean_loss: float, accepted: bool = True, up: int = 0, down: int = 0) -> None:
        """One more update received (``accepted`` by the server or not) from a job that trained ``samples``
        samples at a mean loss of ``mean_loss`` (left out of the loss when not finite: unknown, or diverged),
        was sent ``down`` bytes and uploaded ``up``."""
        self.arrivals += 1
        self.samples_trained += samples
        self.bytes_up += up
        self.bytes_down += down
        self.accepted_since_eval += accepted
        if samples and math.isfinite(mean_loss):
            self.loss_sum += mean_loss * samples
            self.loss_samples += samples

    def train_loss(self) -> float:
        """The sample-weighted mean training loss since the last evaluation (NaN when nothing was trained)."""
        return self.loss_sum / self.loss_samples if self.loss_samples else float("nan")

    def evaluated(self) -> None:
        """Start the next evaluation's tallies."""
        self.accepted_since_eval, self.loss_sum, self.loss_samples = 0, 0.0, 0

    def state(self) -> dict[str, Any]:
        """The figures, for a checkpoint."""
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Tally:
        """Continue from :meth:`state` (or a checkpoint holding its keys)."""
        return cls(**{name: state[name] for name in cls.FIELDS})


def status(entry: dict[str, Any]) -> str:
    """A history entry's figures in a few characters, e.g. ``acc 81.20% loss 0.5310``."""
    return f"acc {entry['test_accuracy']:.2%} loss {entry['test_loss']:.4f}"


def evaluate_run(model: nn.Module, data: Dataset, tests: ClientTests | None) -> tuple[EvalResult, dict[str, Any]]:
    """The test set's accuracy and loss and, when clients hold test sets, each one's accuracy on its own
    (``client_accuracy``): in one pass when the clients' test sets are the test set."""
    shared = tests is not None and tests.covers_test_set
    result = evaluate(model, data.test_x, data.test_y, keep_hits=shared)
    if tests is None:
        return result, {}
    return result, {"client_accuracy": tests.accuracies_from(result.hits) if shared else tests.accuracies(model)}


class RunState:
    """One loop's shared state: the record (:class:`fedlearn.events.recorder.RunRecorder`), the :class:`Tally`,
    the evaluation model and data, the progress bar and the checkpoints."""

    def __init__(self, eval_model: nn.Module, data: Dataset, options: LoopOptions) -> None:
        self.eval_model, self.data, self.options = eval_model, data, options
        self.events = options.listeners()
        self.recorder = options.recorder(self.events)
        self.watch = self.recorder.watch  # times the loop's sections
        self.tally = Tally()

    @property
    def resume(self) -> dict[str, Any] | None:
        """The checkpoint this run continues from, if any."""
        return self.options.resume

    def restore(self, tally: Tally) -> None:
        """Continue the record from the checkpoint, with the loop's figures as they were then."""
        self.recorder.restore(self.options.resume["record"])
        self.tally = tally

    @contextmanager
    def progress(self, title: str, total: int, initial: float) -> Iterator[Callable[[float], None]]:
        """The loop's progress in client updates from ``initial`` to ``total`` (fractions per batch): yields the
        call that advances it."""
        self.events.on_loop(LoopStart(title, total, initial, "update", fractional=True))
        try:
            yield self.events.on_progress
        finally:
            self.events.on_loop_end()

    def evaluate(self, weights: torch.Tensor, step: int, sim_time: float | None, **extra: Any) -> None:
        """Evaluate ``weights`` and add the history entry of ``step`` from the tally, which then starts over."""
        with self.watch.section("evaluation"):
            set_flat(self.eval_model, weights)
            result, clients = evaluate_run(self.eval_model, self.data, self.options.client_tests)
            extra.update(clients)
            if self.options.personal is not None:
                extra["personal_client_accuracy"] = self.options.personal(weights, step)
        self.recorder.record(
            step,
            result,
            sim_time=sim_time,
            samples_trained=self.tally.samples_trained,
            client_updates=self.tally.arrivals,
            train_loss=self.tally.train_loss(),
            bytes_up=self.tally.bytes_up,
            bytes_down=self.tally.bytes_down,
            **extra,
        )
        self.tally.evaluated()

    def finish(self, weights: torch.Tensor, step: int, sim_time: float | None, **extra: Any) -> RunRecorder:
        """Evaluate the final model unless ``step`` was just evaluated; returns the record."""
        history = self.recorder.history
        if not history or history[-1]["step"] != step:
            self.evaluate(weights, step, sim_time, **extra)
        return self.recorder

    def show(self, where: str) -> None:
        """Tell the listeners ``where`` the loop is (say, ``round 3/10``) and the last evaluation's figures."""
        if self.recorder.history:
            self.events.on_status(f"{where} {status(self.recorder.history[-1])}")

    def checkpoint(self, step: int, last: int, fields: Callable[[], dict[str, Any]]) -> None:
        """Save a checkpoint after ``step`` of ``last`` when one is due (every ``--checkpoint_every``, and at
        the end): the script, its settings and the record, and the loop's ``fields()``."""
        checkpointing = self.options.checkpointing
        if checkpointing is None or (step % checkpointing.every and step != last):
            return
        common = {"script": checkpointing.script, "args": checkpointing.args, "record": self.recorder.state()}
        save_checkpoint(checkpointing.path, {**common, **fields()})
