"""Synchronous FedAvg (McMahan et al. 2017): the server's round loop, with clients in-process or on workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from . import seeding
from .checkpoint import Checkpointing, save_checkpoint
from .client import ClientUpdate, LocalTrainer
from .clock import ClientSpeeds
from .flat import set_flat
from .progress import batch_ticks, progress_bar
from .results import RunRecorder
from .server.pipeline import RobustAggregator, ServerPipeline
from .server.steps import build_step
from .training import evaluate


def select_clients(seed: int, round_index: int, num_clients: int, k: int) -> np.ndarray:
    """``k`` of ``num_clients`` uniformly without replacement, fresh for every round (sorted)."""
    rng = seeding.numpy_rng(seed, seeding.SELECTION, round_index)
    return np.sort(rng.choice(num_clients, size=k, replace=False))


RoundExecutor = Callable[[list[int], torch.Tensor, int, Callable[[float], None]], list[ClientUpdate]]
"""Trains a round's picked clients from the weights; reports progress in client updates (fractions per batch)."""


def local_rounds(trainer: LocalTrainer) -> RoundExecutor:
    """Run a round's picked clients one after another in this process (the simulation)."""

    def execute(picked: list[int], weights: torch.Tensor, round_index: int, progress: Callable[[float], None]):
        return [trainer.run(c, weights, round_index, batch_ticks(progress, trainer.num_batches(c))) for c in picked]

    return execute


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
    pipeline: ServerPipeline | None = None,
    execute: RoundExecutor | None = None,
    checkpointing: Checkpointing | None = None,
    resume: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, RunRecorder]:
    """Run ``rounds`` of FedAvg; evaluate the global model after each. Returns final weights and the record.

    Round ``t``: pick ``num_select`` clients, each trains from ``w_t``, then
    ``w_{t+1} = sum_k (n_k / sum_j n_j) w_k``, or the ``pipeline``'s rule over the
    picked clients' updates (after its attack simulation and checks; a round
    whose updates are all rejected keeps ``w_t``). Simulated time advances by
    the slowest picked client's job. ``execute`` trains a round's clients
    (default: in this process; :class:`fedlearn.distributed.DistributedRounds`
    on other processes). A round depends only on ``w_t``, the seed and ``t``,
    so a run resumed from a checkpoint (``resume``) ends as an uninterrupted one.
    """
    num_clients = len(trainer.partitions)
    data = trainer.data
    weights = initial_weights.clone()
    pipeline = pipeline or ServerPipeline(RobustAggregator(weights.numel()), build_step("fedavg"))
    aggregator = pipeline.aggregator
    execute = execute or local_rounds(trainer)
    recorder = RunRecorder(target_accuracy)
    sim_time, samples_trained, updates, first = 0.0, 0, 0, 1
    if resume is not None:
        weights = resume["weights"].to(weights.device, weights.dtype)
        first = resume["round"] + 1
        sim_time, samples_trained, updates = resume["sim_time"], resume["samples_trained"], resume["updates"]
        recorder.restore(resume["record"])
        aggregator.restore(resume["aggregator"])
    total, done = rounds * num_select, (first - 1) * num_select
    with progress_bar(total, "FedAvg", show_progress, unit="update", initial=done, fractional=True) as bar:
        watch = recorder.watch
        for round_index in range(first, rounds + 1):
            picked = [int(c) for c in select_clients(seed, round_index, num_clients, num_select)]
            with watch.section("training"):
                results = execute(picked, weights, round_index, bar.update)
            with watch.section("aggregation"):
                stepped = pipeline.apply(
                    weights,
                    [u.weights for u in results],
                    [u.client for u in results],
                    [u.num_samples for u in results],
                    key=round_index,
                    origin=weights,
                )
                if stepped is not None:  # else the defences left nothing: the model stays
                    weights = stepped
            trained = [u.stats.samples for u in results]
            sim_time += speeds.round_duration(picked, trained)
            samples_trained += sum(trained)
            updates += len(results)
            loss_sum = sum(u.stats.mean_loss * u.stats.samples for u in results)
            train_loss = loss_sum / sum(trained) if sum(trained) else float("nan")  # no sample: no loss
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
            if checkpointing is not None and (round_index % checkpointing.every == 0 or round_index == rounds):
                save_checkpoint(
                    checkpointing.path,
                    {
                        "script": "run_federated",
                        "args": checkpointing.args,
                        "round": round_index,
                        "weights": weights.detach().cpu(),
                        "sim_time": sim_time,
                        "samples_trained": samples_trained,
                        "updates": updates,
                        "record": recorder.state(),
                        "aggregator": aggregator.state(),
                    },
                )
    return weights, recorder
