"""The local-only baseline (``run_baseline.py --local_only``): every client trains its own model on its own training
part alone and is evaluated on its own test set; what each client would have had without federating.

Clients train one after another from the run's initial weights (one model in memory at a time), for ``--epoch``
epochs, each with a fresh optimizer and its own seeded stream. Every epoch's figures are kept per client and
recorded once all clients are done (their wall-clock times are the run's end): ``client_accuracy`` holds each
client's accuracy with its own model; ``test_accuracy`` and ``test_loss`` are pooled over all clients' test samples,
each judged by its client's model (there is no single model for the global test set).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core import seeding
from ..core.flat import flat_parameters, get_flat, set_flat
from ..core.training import ClientTests, EvalResult, Passes, count_batches, evaluate, make_optimizer, train
from ..data import Dataset
from ..data.augment import build_augment
from ..data.windows import take
from ..events import LoopStart
from ..events.recorder import RunRecorder
from ..personal.evaluation import own_test_sets
from .centralized import Epochs
from .skeleton import LoopOptions, status


class EpochFigures:
    """Every client's figures after each epoch: accuracy, and the pooled hits, losses and training losses."""

    def __init__(self, epochs: int, clients: int) -> None:
        self.accuracy: list[list[float | None]] = [[None] * clients for _ in range(epochs)]
        self.correct, self.loss_sum = [0.0] * epochs, [0.0] * epochs
        self.train_loss_sum, self.trained = [0.0] * epochs, [0] * epochs

    def add(self, epoch: int, client: int, result: EvalResult | None, tested: int, loss: float, trained: int) -> None:
        """Client ``client``'s figures after ``epoch`` (0-based): its own test set's ``result`` over ``tested``
        samples (None: it has none), and its training loss over ``trained`` samples."""
        if result is not None:
            self.accuracy[epoch][client] = result.accuracy
            self.correct[epoch] += result.accuracy * tested
            self.loss_sum[epoch] += result.loss * tested
        self.train_loss_sum[epoch] += loss * trained
        self.trained[epoch] += trained


def run_local_only(
    model: nn.Module, data: Dataset, parts: list[torch.Tensor], tests: ClientTests, plan: Epochs, options: LoopOptions
) -> RunRecorder:
    """Train a model per client on ``parts[client]`` alone from ``model``'s weights; evaluate each on its own test
    set after every epoch. Returns the record."""
    initial, params = get_flat(model), flat_parameters(model)
    own = own_test_sets(tests)
    tested = sum(len(index) for index in own)
    figures = EpochFigures(plan.epochs, len(parts))
    events = options.listeners()
    recorder = options.recorder(events)
    total = sum(count_batches(int(p.numel()), plan.batch_size, plan.epochs) for p in parts)
    events.on_loop(LoopStart("Local only", total))
    augment = build_augment(plan.augment, data.black())
    try:
        for client, part in enumerate(parts):
            set_flat(params, initial)
            optimizer = make_optimizer(plan.optimizer, params, plan.lr)
            generator = seeding.torch_generator(options.seed, seeding.LOCAL_ONLY, client)
            passes = Passes(part.to(data.train_y.device), 1, plan.batch_size, generator, augment)
            x, y = take(tests.x, own[client]), tests.y[own[client]]
            for epoch in range(plan.epochs):
                with recorder.watch.section("training"):
                    stats = train(model, optimizer, data.train_x, data.train_y, passes, lambda: events.on_progress(1))
                with recorder.watch.section("evaluation"):
                    result = evaluate(model, x, y) if len(y) else None
                figures.add(epoch, client, result, len(y), stats.mean_loss, stats.samples)
            events.on_status(f"client {client + 1}/{len(parts)}")
        trained = sum(int(p.numel()) for p in parts)
        for epoch in range(plan.epochs):
            pooled = EvalResult(figures.correct[epoch] / tested, figures.loss_sum[epoch] / tested)
            entry = recorder.record(epoch + 1, pooled, sim_time=None, samples_trained=(epoch + 1) * trained,
                                    client_updates=None,
                                    train_loss=figures.train_loss_sum[epoch] / max(figures.trained[epoch], 1),
                                    client_accuracy=figures.accuracy[epoch])  # fmt: skip
            events.on_status(f"epoch {epoch + 1}/{plan.epochs} {status(entry)}")
    finally:
        events.on_loop_end()
    return recorder
