"""Centralized training on the whole training set: the reference run."""

from __future__ import annotations

import torch
from torch import nn

from . import seeding
from .data import Dataset
from .progress import progress_bar
from .results import RunRecorder
from .training import count_batches, evaluate, make_optimizer, train


def run_centralized(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    optimizer: str,
    lr: float,
    seed: int,
    target_accuracy: float | None = None,
    show_progress: bool = True,
) -> RunRecorder:
    """Train ``model`` for ``epochs`` passes with one optimizer; evaluate after each epoch."""
    n = int(data.train_y.numel())
    indices = torch.arange(n, device=data.train_x.device)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    generator = seeding.torch_generator(seed, seeding.CENTRAL_TRAIN)
    recorder = RunRecorder(target_accuracy)
    with progress_bar(count_batches(n, batch_size, epochs), "Baseline", enabled=show_progress) as bar:
        tick = lambda: bar.update(1)  # noqa: E731
        for epoch in range(1, epochs + 1):
            with recorder.watch.section("training"):
                stats = train(model, opt, data.train_x, data.train_y, indices, 1, batch_size, generator, on_batch=tick)
            with recorder.watch.section("evaluation"):
                ev = evaluate(model, data.test_x, data.test_y)
            recorder.record(
                epoch, ev, sim_time=None, samples_trained=epoch * n, client_updates=None, train_loss=stats.mean_loss
            )
            bar.set_postfix_str(f"epoch {epoch}/{epochs} acc {ev.accuracy:.2%} loss {ev.loss:.4f}", refresh=False)
    return recorder
