"""Synchronous FedAvg (McMahan et al. 2017): the server's round loop, with clients in-process or on workers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from ..client import ClientUpdate, LocalTrainer
from ..comm.clock import ClientSpeeds
from ..core.seeding import select_clients
from ..events.progress import batch_ticks
from ..events.recorder import RunRecorder
from ..server.synchronous import SyncServer
from .skeleton import LoopOptions, RunState, Tally


@dataclass(frozen=True)
class RoundTask:
    """What a round's picked clients train from: the global weights and, with SCAFFOLD, the server's
    control variate; ``round_index`` keys their shuffles."""

    picked: list[int]
    weights: torch.Tensor
    round_index: int
    control: torch.Tensor | None = None


RoundExecutor = Callable[[RoundTask, Callable[[float], None]], list[ClientUpdate]]
"""Trains a round's picked clients, in ``picked`` order; reports progress in client updates (fractions per
batch)."""


def local_rounds(trainer: LocalTrainer) -> RoundExecutor:
    """Run a round's picked clients one after another in this process (the simulation)."""

    def execute(task: RoundTask, progress: Callable[[float], None]) -> list[ClientUpdate]:
        ticks = {c: batch_ticks(progress, trainer.num_batches(c, task.round_index)) for c in task.picked}
        return [trainer.run(c, task.weights, task.round_index, ticks[c], task.control) for c in task.picked]

    return execute


@dataclass(frozen=True)
class Rounds:
    """The synchronous budget: ``rounds`` rounds of ``num_select`` clients."""

    rounds: int
    num_select: int


def run_fedavg(
    trainer: LocalTrainer,
    eval_model: nn.Module,
    server: SyncServer,
    speeds: ClientSpeeds,
    budget: Rounds,
    options: LoopOptions = LoopOptions(),
    execute: RoundExecutor | None = None,
) -> RunRecorder:
    """Run the rounds of FedAvg; evaluate the global model after each. Returns the record.

    Round ``t``: pick ``num_select`` clients, each trains from ``w_t``, and the
    ``server`` steps with their updates. Simulated time advances by the slowest
    picked client's job. ``execute`` trains a round's clients (default: in this
    process; :class:`fedlearn.distributed.sync_rounds.DistributedRounds` on
    other processes). A round depends only on ``w_t``, the seed and ``t``, so a
    run resumed from a checkpoint (``options.resume``) ends as an uninterrupted one.
    """
    state = RunState(eval_model, trainer.data, options)
    execute = execute or local_rounds(trainer)
    num_clients, sim_time, first = len(trainer.partitions), 0.0, 1
    if state.resume is not None:
        sim_time, first = state.resume["sim_time"], state.resume["round"] + 1
        server.restore(state.resume)
        trainer.restore(state.resume)
        resume = state.resume
        state.restore(Tally(resume["updates"], resume["samples_trained"], bytes_up=resume["bytes_up"],
                            bytes_down=resume["bytes_down"]))  # fmt: skip
    with state.progress("FedAvg", budget.rounds * budget.num_select, (first - 1) * budget.num_select) as advance:
        for round_index in range(first, budget.rounds + 1):
            picked = [int(c) for c in select_clients(options.seed, round_index, num_clients, budget.num_select)]
            picked, dropped = _without_dropped(trainer, round_index, picked)
            control = server.control.c if server.control is not None else None
            with state.watch.section("training"):
                results = execute(RoundTask(picked, server.weights, round_index, control), advance)
            with state.watch.section("aggregation"):
                server.step([u.payload for u in results], [u.client for u in results],
                            [u.num_samples for u in results], round_index,
                            [u.control_delta for u in results])  # fmt: skip
            down = sum(t.numel() * t.element_size() for t in (server.weights, control) if t is not None)
            down -= trainer.withheld * server.weights.element_size()  # FedPer: the personal layers stay put
            for update in results:
                state.tally.count(update.stats.samples, update.stats.mean_loss, up=update.upload_bytes, down=down)
            state.tally.bytes_down += down * dropped  # the stragglers dropped were sent the model too
            advance(dropped)
            sim_time += speeds.round_duration(picked, [u.stats.samples for u in results])
            state.evaluate(server.weights, round_index, sim_time)
            state.show(f"round {round_index}/{budget.rounds}")
            state.checkpoint(
                round_index, budget.rounds, partial(_checkpoint, round_index, server, trainer, sim_time, state.tally)
            )
    return state.finish(server.weights, budget.rounds, sim_time)


def _without_dropped(trainer: LocalTrainer, round_index: int, picked: list[int]) -> tuple[list[int], int]:
    """The picked clients that train (all but the stragglers whose work is dropped) and how many were dropped."""
    if trainer.stragglers is None:
        return picked, 0
    active = trainer.stragglers.active(round_index, picked)
    return active, len(picked) - len(active)


def _checkpoint(
    round_index: int, server: SyncServer, trainer: LocalTrainer, sim_time: float, tally: Tally
) -> dict[str, Any]:
    """What a synchronous checkpoint holds besides the record (the tally starts over every round); with
    SCAFFOLD in the simulation, the clients' control variates too."""
    return {"round": round_index, "sim_time": sim_time, "samples_trained": tally.samples_trained,
            "updates": tally.arrivals, "bytes_up": tally.bytes_up, "bytes_down": tally.bytes_down,
            **server.state(), **trainer.state()}  # fmt: skip
