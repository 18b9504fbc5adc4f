"""Asynchronous FedAsync / FedBuff with in-process clients on the virtual clock.

The timeline (:class:`fedlearn.comm.clock.AsyncTimeline`) is fixed by the seed: who
is dispatched when, and in which order the jobs arrive. Each job trains from the
server's model as it was when the job was dispatched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import torch
from torch import nn

from ..client import ClientUpdate, LocalTrainer
from ..comm.clock import AsyncTimeline, ClientSpeeds, PlannedJob
from ..core import seeding
from ..errors import DataError
from ..events.progress import batch_ticks
from ..events.recorder import RunRecorder
from ..server.asynchronous import AsyncServer, title
from .skeleton import LoopOptions, RunState, Tally

Sent = dict[int, tuple[torch.Tensor, int]]
"""The models jobs in flight started from, with their versions, keyed by the arrival they were sent after."""


class AsyncJobs(Protocol):
    """Where the asynchronous jobs train: told each model jobs start from, asked for each update in arrival order."""

    def start(self, after: int, weights: torch.Tensor, version: int) -> None:
        """Jobs dispatched after ``after`` arrivals start from ``weights`` (model ``version``)."""

    def take(self, job: PlannedJob, start: torch.Tensor, progress: Callable[[float], None]) -> ClientUpdate:
        """The update of ``job``, which started from ``start``."""


JobSource = Callable[[Callable[[], AsyncTimeline], int, int], AsyncJobs]
"""Builds an :class:`AsyncJobs` from a way to plan the run's timeline again, the first arrival to train (after a
resume) and the last (exclusive)."""


@dataclass(frozen=True)
class InProcessJobs:
    """Each job trained in this process when it arrives (its start model is kept until then)."""

    trainer: LocalTrainer

    def start(self, after: int, weights: torch.Tensor, version: int) -> None:
        """Nothing to do before the job arrives."""

    def take(self, job: PlannedJob, start: torch.Tensor, progress: Callable[[float], None]) -> ClientUpdate:
        """Train ``job`` now."""
        ticks = batch_ticks(progress, self.trainer.num_batches(job.client))
        return self.trainer.run(job.client, start, job.index + 1, ticks)


@dataclass(frozen=True)
class Updates:
    """The asynchronous budget: ``max_updates`` updates received, ``concurrency`` jobs in flight, an
    evaluation every ``eval_every`` accepted updates."""

    max_updates: int
    eval_every: int
    concurrency: int = 1


def run_async(
    trainer: LocalTrainer,
    eval_model: nn.Module,
    server: AsyncServer,
    speeds: ClientSpeeds,
    budget: Updates,
    options: LoopOptions = LoopOptions(),
    jobs: JobSource | None = None,
) -> RunRecorder:
    """Receive ``budget.max_updates`` client updates in virtual-clock order; returns the record.

    ``jobs`` says where the clients train (default: in this process, each job when
    it arrives; :class:`fedlearn.distributed.pool.PooledAsyncJobs`: on worker
    processes, ahead of the clock). Either way a job trains from the model it was
    dispatched with, under its arrival index as job key, so the numbers are the same.

    Jobs still in flight when the budget is spent are never computed. The timeline
    is planned one arrival at a time (memory grows with the jobs in flight, not the
    budget), so a run resumed from a checkpoint (with the models in-flight jobs
    started from) ends as an uninterrupted one.
    """
    job_samples = [trainer.num_samples(c) * trainer.config.epochs for c in range(len(trainer.partitions))]

    def plan() -> AsyncTimeline:
        rng = seeding.numpy_rng(options.seed, seeding.DISPATCH)
        return AsyncTimeline(speeds, job_samples, budget.concurrency, rng)

    timeline = plan()
    state = RunState(eval_model, trainer.data, options)
    sent: Sent = {0: (server.weights, server.version)}
    clock = 0.0
    if state.resume is not None:
        sent, clock = _restore(state, server, timeline)
        trainer.restore(state.resume)
    tally, name = state.tally, title(server.config.algorithm)
    source = (jobs or (lambda *_: InProcessJobs(trainer)))(plan, tally.arrivals, budget.max_updates)
    for after in sorted(sent):
        source.start(after, *sent[after])
    with state.progress(name, budget.max_updates, tally.arrivals) as advance:
        while tally.arrivals < budget.max_updates:
            job = timeline.next_arrival()
            start, tau = sent[job.dispatched_after]
            clock = job.arrival_time
            with state.watch.section("training"):
                update = source.take(job, start, advance)
            with state.watch.section("aggregation"):
                accepted = server.receive(update.payload, start, tau, update.client, update.num_samples)
            down = start.numel() * start.element_size()
            tally.count(update.stats.samples, update.stats.mean_loss, accepted, up=update.upload_bytes, down=down)
            sent[tally.arrivals] = (server.weights, server.version)  # the job dispatched now starts from it
            source.start(tally.arrivals, server.weights, server.version)
            _forget_unused(sent, timeline)
            if tally.accepted_since_eval >= budget.eval_every:
                state.evaluate(server.weights, tally.arrivals, clock, version=server.version)
            state.checkpoint(tally.arrivals, budget.max_updates, partial(_checkpoint, server, tally, sent, trainer))
            state.show(f"update {tally.arrivals}/{budget.max_updates} v{server.version}")
    return state.finish(server.weights, tally.arrivals, clock, version=server.version)


def _forget_unused(sent: Sent, timeline: AsyncTimeline) -> None:
    """Drop the models no job in flight started from."""
    in_use = timeline.models_in_use()
    for key in [k for k in sent if k not in in_use]:
        del sent[key]


def async_fields(mode: str, server: AsyncServer, tally: Tally) -> dict[str, Any]:
    """What every asynchronous checkpoint holds besides the record (``mode``: simulated or distributed)."""
    return {"mode": mode, "server": server.state(), **tally.state()}


def _checkpoint(server: AsyncServer, tally: Tally, sent: Sent, trainer: LocalTrainer) -> dict[str, Any]:
    return {
        **async_fields("simulated", server, tally),
        **trainer.state(),  # the clients' error-feedback residuals
        "sent_keys": list(sent),
        "sent_weights": [w.detach().cpu() for w, _ in sent.values()],
        "sent_versions": [v for _, v in sent.values()],
    }


def restore_server(state: RunState, server: AsyncServer, mode: str) -> None:
    """Continue the server and the record from the checkpoint, which must be of a ``mode`` run."""
    resume = state.resume
    if resume.get("mode") != mode:
        made, how = ("--distributed", "with") if mode == "simulated" else ("simulated", "without")
        raise DataError(f"--resume: this checkpoint is of a {made} run; resume it {how} --distributed")
    server.restore(resume["server"])
    state.restore(Tally.from_state(resume))


def _restore(state: RunState, server: AsyncServer, timeline: AsyncTimeline) -> tuple[Sent, float]:
    """The models in flight as checkpointed, and the clock; the timeline is replayed up to the checkpoint."""
    restore_server(state, server, "simulated")
    resume = state.resume
    device, dtype = server.weights.device, server.weights.dtype
    sent = {
        int(k): (w.to(device, dtype), int(v))
        for k, w, v in zip(resume["sent_keys"], resume["sent_weights"], resume["sent_versions"])
    }
    clock = 0.0
    for _ in range(resume["arrivals"]):
        clock = timeline.next_arrival().arrival_time
    missing = timeline.models_in_use() - set(sent)
    if missing:
        raise DataError(f"--resume: the checkpoint lacks the models of jobs in flight (sent after {sorted(missing)})")
    return sent, clock
