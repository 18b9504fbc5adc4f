"""Synchronous FedAvg (McMahan et al. 2017): the server's round loop with in-process clients."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import seeding
from .byzantine import RobustAggregator
from .client import LocalTrainer
from .clock import ClientSpeeds
from .flat import set_flat
from .progress import progress_bar
from .results import RunRecorder
from .training import evaluate


def select_clients(seed: int, round_index: int, num_clients: int, k: int) -> np.ndarray:
    """``k`` of ``num_clients`` uniformly without replacement, fresh for every round (sorted)."""
    rng = seeding.numpy_rng(seed, seeding.SELECTION, round_index)
    return np.sort(rng.choice(num_clients, size=k, replace=False))


def run_fedavg(
    trainer: LocalTrainer,
    eval_model: nn.Module,
    initial_weights: torch.Tensor,
    speeds: ClientSpeeds,
    *,
    rounds: int,
    num_select: int,
    seed: int,
    target_accuracy: float | None = None,
    show_progress: bool = True,
    aggregator: RobustAggregator | None = None,
) -> tuple[torch.Tensor, RunRecorder]:
    """Run ``rounds`` of FedAvg; evaluate the global model after each. Returns final weights and the record.

    Round ``t``: pick ``num_select`` clients, each trains from ``w_t``, then
    ``w_{t+1} = sum_k (n_k / sum_j n_j) w_k``, or ``aggregator``'s rule over the
    picked clients' updates (after its attack simulation and checks; a round
    whose updates are all rejected keeps ``w_t``). Simulated time advances by
    the slowest picked client's job.
    """
    num_clients = len(trainer.partitions)
    schedule = [select_clients(seed, r, num_clients, num_select) for r in range(1, rounds + 1)]
    total_batches = sum(trainer.num_batches(int(c)) for picked in schedule for c in picked)
    data = trainer.data
    weights = initial_weights.clone()
    aggregator = aggregator or RobustAggregator(weights.numel())
    recorder = RunRecorder(target_accuracy)
    sim_time, samples_trained, updates = 0.0, 0, 0
    with progress_bar(total_batches, "FedAvg", enabled=show_progress) as bar:
        tick = lambda: bar.update(1)  # noqa: E731
        watch = recorder.watch
        for round_index, picked in enumerate(schedule, start=1):
            with watch.section("training"):
                results = [trainer.run(int(c), weights, round_index, on_batch=tick) for c in picked]
            with watch.section("aggregation"):
                combined = aggregator.combine(
                    [u.weights for u in results],
                    [u.client for u in results],
                    [u.num_samples for u in results],
                    key=round_index,
                    origin=weights,
                )
                if combined is not None:
                    weights = combined
            trained = [u.stats.samples for u in results]
            sim_time += speeds.round_duration(picked, trained)
            samples_trained += sum(trained)
            updates += len(results)
            train_loss = sum(u.stats.mean_loss * u.stats.samples for u in results) / sum(trained)
            with watch.section("evaluation"):
                set_flat(eval_model, weights)
                ev = evaluate(eval_model, data.test_x, data.test_y)
            recorder.record(
                round_index,
                ev,
                sim_time=sim_time,
                samples_trained=samples_trained,
                client_updates=updates,
                train_loss=train_loss,
            )
            bar.set_postfix_str(f"round {round_index}/{rounds} acc {ev.accuracy:.2%} loss {ev.loss:.4f}", refresh=False)
    return weights, recorder
