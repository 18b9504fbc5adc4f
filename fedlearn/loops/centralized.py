"""Centralized training on the whole training set: the reference run."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core import seeding
from ..core.training import Passes, count_batches, make_optimizer, train
from ..data import Dataset
from ..data.augment import build_augment
from ..events import LoopStart
from ..events.recorder import RunRecorder
from .skeleton import LoopOptions, evaluate_run, status


@dataclass(frozen=True)
class Epochs:
    """The centralized budget and optimizer: ``epochs`` passes in batches of ``batch_size``."""

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    augment: str = "none"  # --augment


def run_centralized(model: nn.Module, data: Dataset, plan: Epochs, options: LoopOptions = LoopOptions()) -> RunRecorder:
    """Train ``model`` for ``plan.epochs`` passes with one optimizer; evaluate after each epoch."""
    n, epochs, batch_size = int(data.train_y.numel()), plan.epochs, plan.batch_size
    indices = torch.arange(n, device=data.train_x.device)
    opt = make_optimizer(plan.optimizer, model.parameters(), plan.lr)
    generator = seeding.torch_generator(options.seed, seeding.CENTRAL_TRAIN)
    passes = Passes(indices, 1, batch_size, generator, build_augment(plan.augment, data.black()))  # an epoch a call
    events = options.listeners()
    recorder = options.recorder(events)
    events.on_loop(LoopStart("Baseline", count_batches(n, batch_size, epochs)))
    tick = lambda: events.on_progress(1)  # noqa: E731
    try:
        for epoch in range(1, epochs + 1):
            with recorder.watch.section("training"):
                stats = train(model, opt, data.train_x, data.train_y, passes, on_batch=tick)
            with recorder.watch.section("evaluation"):
                ev, clients = evaluate_run(model, data, options.client_tests)
            entry = recorder.record(epoch, ev, sim_time=None, samples_trained=epoch * n, client_updates=None,
                                    train_loss=stats.mean_loss, **clients)  # fmt: skip
            events.on_status(f"epoch {epoch}/{epochs} {status(entry)}")
    finally:
        events.on_loop_end()
    return recorder
