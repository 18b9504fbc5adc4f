"""Asynchronous aggregation (FedAsync, FedBuff) on the virtual clock.

``AsyncServer`` is what the server does with an arriving update, whatever
carries it; ``run_async`` drives it with in-process clients on the timeline
that :class:`fedlearn.clock.AsyncTimeline` fixes from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import seeding
from .checkpoint import Checkpointing, save_checkpoint
from .client import LocalTrainer
from .clock import AsyncTimeline, ClientSpeeds
from .data import Dataset
from .errors import DataError
from .flat import set_flat
from .progress import batch_ticks, progress_bar
from .results import RunRecorder
from .server.checks import rejection_reason
from .server.pipeline import RobustAggregator, ServerPipeline
from .server.staleness import staleness_weight
from .server.steps import ServerStep, build_step
from .training import evaluate

ALGORITHMS = ("fedasync", "fedbuff")
TITLES = {"fedasync": "FedAsync", "fedbuff": "FedBuff"}


@dataclass(frozen=True)
class AsyncConfig:
    """The server's rule for arriving updates."""

    algorithm: str = "fedasync"
    alpha: float = 0.6  # FedAsync mixing weight
    staleness: str = "polynomial"
    staleness_a: float = 0.5
    staleness_b: float = 4
    buffer_size: int = 10  # FedBuff K
    server_lr: float = 1.0  # FedBuff eta_g
    max_staleness: int | None = None  # discard updates staler than this


class AsyncServer:
    """Holds the global model and its version; applies each arriving update.

    FedAsync: ``w <- (1 - a_t) w + a_t w_new`` with ``a_t = alpha * S(s)``, version + 1.
    FedBuff: buffer ``S(s) * (w_new - w_tau)``; after K of them
    ``w <- w + eta_g * mean(buffer)``, version + 1. ``s = version - tau``.
    An update staler than ``max_staleness`` is discarded and counted.
    Every update goes through the server pipeline (attack simulation, checks,
    clipping, rule, then the algorithm's step from :mod:`fedlearn.server.steps`):
    alone for FedAsync, as the whole buffer for FedBuff, whose mean the rule
    replaces; a rejected update is counted and not applied.
    The server replaces ``weights`` on every step, never changes it in place,
    so a reference taken at dispatch stays the model that was sent.
    """

    def __init__(
        self,
        weights: torch.Tensor,
        config: AsyncConfig,
        aggregator: RobustAggregator | None = None,
        step: ServerStep | None = None,
    ):
        if config.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {config.algorithm!r}")
        self.config = config
        self.aggregator = aggregator or RobustAggregator(weights.numel())
        step = step or build_step(config.algorithm, alpha=config.alpha, server_lr=config.server_lr)
        self.pipeline = ServerPipeline(self.aggregator, step)
        self.weights = weights.clone()
        self.version = 0
        self.received = 0
        self.discarded = 0
        self.staleness: list[int] = []
        self._deltas: list[torch.Tensor] = []
        self._scales: list[float] = []
        self._clients: list[int] = []
        self._counts: list[int] = []

    def receive(
        self, client_weights: torch.Tensor, start_weights: torch.Tensor, tau: int, client: int = 0, num_samples: int = 1
    ) -> bool:
        """Take ``client``'s new weights, trained from ``start_weights`` (version ``tau``); True unless
        discarded as too stale or (FedAsync) rejected by the checks."""
        cfg = self.config
        reason = rejection_reason(client_weights, self.weights.numel())
        if reason is not None:  # malformed: counted, never applied (nor differenced with the model)
            self.aggregator.note_rejected(reason)
            return False
        s = self.version - tau
        self.received += 1
        self.staleness.append(s)
        if cfg.max_staleness is not None and s > cfg.max_staleness:
            self.discarded += 1
            return False
        weight = staleness_weight(cfg.staleness, s, cfg.staleness_a, cfg.staleness_b)
        if cfg.algorithm == "fedasync":
            mixed = self.pipeline.apply(
                self.weights, [client_weights], [client], [num_samples], self.received, start_weights, scale=weight
            )
            if mixed is None:  # rejected by the checks (and counted there)
                return False
            self.weights = mixed
            self.version += 1
            return True
        self._deltas.append(client_weights - start_weights)
        self._scales.append(weight)
        self._clients.append(client)
        self._counts.append(num_samples)
        if len(self._deltas) == cfg.buffer_size:
            stepped = self.pipeline.apply(
                self.weights, self._deltas, self._clients, self._counts, self.received, scales=self._scales
            )
            if stepped is not None:  # else every buffered delta was rejected: no step
                self.weights = stepped
                self.version += 1
            for buffer in (self._deltas, self._scales, self._clients, self._counts):
                buffer.clear()
        return True

    def state(self) -> dict[str, Any]:
        """Everything needed to continue: model, version, counters, the FedBuff buffer."""
        return {
            "weights": self.weights.detach().cpu(),
            "version": self.version,
            "received": self.received,
            "discarded": self.discarded,
            "staleness": list(self.staleness),
            "buffer": [d.detach().cpu() for d in self._deltas],
            "scales": list(self._scales),
            "clients": list(self._clients),
            "counts": list(self._counts),
            "aggregator": self.aggregator.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        device, dtype = self.weights.device, self.weights.dtype
        self.weights = state["weights"].to(device, dtype)
        self.version, self.received, self.discarded = state["version"], state["received"], state["discarded"]
        self.staleness = list(state["staleness"])
        self._deltas = [d.to(device, dtype) for d in state["buffer"]]
        self._scales, self._clients, self._counts = list(state["scales"]), list(state["clients"]), list(state["counts"])
        self.aggregator.restore(state["aggregator"])

    @property
    def buffered(self) -> int:
        """Accepted FedBuff deltas waiting for the buffer to fill."""
        return len(self._deltas)

    def summary(self) -> dict[str, Any]:
        """Staleness and counting figures for the Results table and JSON."""
        return {
            "mean_staleness": sum(self.staleness) / len(self.staleness) if self.staleness else 0.0,
            "max_staleness": max(self.staleness, default=0),
            "discarded_updates": self.discarded,
            "server_steps": self.version,
            "unapplied_updates": self.buffered,
            **self.aggregator.summary(),
        }


def run_async(
    trainer: LocalTrainer,
    eval_model: nn.Module,
    server: AsyncServer,
    speeds: ClientSpeeds,
    *,
    concurrency: int,
    max_updates: int,
    eval_every: int,
    seed: int,
    target_accuracy: float | None = None,
    show_progress: bool = True,
    checkpointing: Checkpointing | None = None,
    resume: dict[str, Any] | None = None,
) -> RunRecorder:
    """Receive ``max_updates`` client updates in virtual-clock order; evaluate every ``eval_every`` accepted ones.

    Each job trains from the server's model as it was when the job was dispatched;
    jobs still in flight when the budget is spent are never computed. The timeline
    is fixed by the seed and planned one arrival at a time (memory grows with the
    jobs in flight, not the budget), so a run resumed from a checkpoint (taken every
    ``checkpointing.every`` updates, with the models in-flight jobs started from)
    ends as an uninterrupted one.
    """
    job_samples = [trainer.num_samples(c) * trainer.config.epochs for c in range(len(trainer.partitions))]
    timeline = AsyncTimeline(speeds, job_samples, concurrency, seeding.numpy_rng(seed, seeding.DISPATCH))
    recorder = RunRecorder(target_accuracy)
    loop, sent = AsyncTally(), {0: (server.weights, server.version)}
    if resume is not None:
        loop, sent = _restore_async(resume, server, recorder, timeline)
    title = TITLES[server.config.algorithm]
    with progress_bar(max_updates, title, show_progress, unit="update", initial=loop.arrivals, fractional=True) as bar:
        while loop.arrivals < max_updates:
            job = timeline.next_arrival()
            start, tau = sent[job.dispatched_after]
            ticks = batch_ticks(bar.update, trainer.num_batches(job.client))
            with recorder.watch.section("training"):
                update = trainer.run(job.client, start, job_key=job.index + 1, on_batch=ticks)
            with recorder.watch.section("aggregation"):
                accepted = server.receive(update.weights, start, tau, update.client, update.num_samples)
            loop.count(update.stats.samples, accepted)
            loop.add_loss(update.stats.mean_loss, update.stats.samples)
            sent[loop.arrivals] = (server.weights, server.version)  # the job dispatched now starts from it
            _forget_unused(sent, timeline)
            regular = loop.accepted_since_eval >= eval_every
            if regular:
                record_evaluation(recorder, eval_model, server, trainer.data, job.arrival_time, loop)
                loop.evaluated()
            if checkpointing is not None and (loop.arrivals % checkpointing.every == 0 or loop.arrivals == max_updates):
                save_checkpoint(checkpointing.path, _async_checkpoint(checkpointing, server, recorder, loop, sent))
            if loop.arrivals == max_updates and not regular:  # the budget is spent: the final model's figures
                record_evaluation(recorder, eval_model, server, trainer.data, job.arrival_time, loop)
            last = recorder.history[-1] if recorder.history else None
            if last is not None:
                status = f"acc {last['test_accuracy']:.2%} loss {last['test_loss']:.4f}"
                bar.set_postfix_str(f"update {loop.arrivals}/{max_updates} v{server.version} {status}", refresh=False)
    return recorder


@dataclass
class AsyncTally:
    """An asynchronous loop's running figures (what a checkpoint keeps besides the server and the record)."""

    arrivals: int = 0
    samples_trained: int = 0
    accepted_since_eval: int = 0
    loss_sum: float = 0.0  # training loss of the jobs since the last evaluation
    loss_samples: int = 0

    FIELDS = ("arrivals", "samples_trained", "accepted_since_eval", "loss_sum", "loss_samples")

    def count(self, samples: int, accepted: bool) -> None:
        """One more update received (``accepted`` by the server or not), of ``samples`` trained samples."""
        self.arrivals += 1
        self.samples_trained += samples
        self.accepted_since_eval += accepted

    def add_loss(self, mean_loss: float, samples: int) -> None:
        """A job's mean training loss over its ``samples``."""
        self.loss_sum += mean_loss * samples
        self.loss_samples += samples

    def evaluated(self) -> None:
        """Start the next evaluation's tallies."""
        self.accepted_since_eval, self.loss_sum, self.loss_samples = 0, 0.0, 0

    def state(self) -> dict[str, Any]:
        """The figures, for a checkpoint."""
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AsyncTally:
        """Continue from :meth:`state` (or a checkpoint holding its keys)."""
        return cls(**{name: state[name] for name in cls.FIELDS})


def _forget_unused(sent: dict[int, tuple[torch.Tensor, int]], timeline: AsyncTimeline) -> None:
    """Drop the models no job in flight started from."""
    in_use = timeline.models_in_use()
    for key in [k for k in sent if k not in in_use]:
        del sent[key]


def async_checkpoint(
    mode: str, checkpointing: Checkpointing, server: AsyncServer, recorder: RunRecorder, tally: AsyncTally
) -> dict[str, Any]:
    """What every asynchronous checkpoint holds (``mode``: simulated or distributed); a loop adds its own."""
    return {
        "script": "run_async",
        "mode": mode,
        "args": checkpointing.args,
        "server": server.state(),
        "record": recorder.state(),
        **tally.state(),
    }


def _async_checkpoint(
    checkpointing: Checkpointing,
    server: AsyncServer,
    recorder: RunRecorder,
    loop: AsyncTally,
    sent: dict[int, tuple[torch.Tensor, int]],
) -> dict[str, Any]:
    return {
        **async_checkpoint("simulated", checkpointing, server, recorder, loop),
        "sent_keys": list(sent),
        "sent_weights": [w.detach().cpu() for w, _ in sent.values()],
        "sent_versions": [v for _, v in sent.values()],
    }


def _restore_async(
    resume: dict[str, Any], server: AsyncServer, recorder: RunRecorder, timeline: AsyncTimeline
) -> tuple[AsyncTally, dict[int, tuple[torch.Tensor, int]]]:
    """The loop's state as checkpointed; the timeline is replayed up to the checkpoint's arrival."""
    if resume.get("mode") != "simulated":
        raise DataError("--resume: this checkpoint is of a --distributed run; resume it with --distributed")
    server.restore(resume["server"])
    recorder.restore(resume["record"])
    device, dtype = server.weights.device, server.weights.dtype
    sent = {
        int(k): (w.to(device, dtype), int(v))
        for k, w, v in zip(resume["sent_keys"], resume["sent_weights"], resume["sent_versions"])
    }
    for _ in range(resume["arrivals"]):
        timeline.next_arrival()
    missing = timeline.models_in_use() - set(sent)
    if missing:
        raise DataError(f"--resume: the checkpoint lacks the models of jobs in flight (sent after {sorted(missing)})")
    return AsyncTally.from_state(resume), sent


def record_evaluation(
    recorder: RunRecorder,
    eval_model: nn.Module,
    server: AsyncServer,
    data: Dataset,
    sim_time: float | None,
    tally: AsyncTally,
) -> None:
    """Evaluate the server's model and add the history entry after ``tally.arrivals`` updates
    (the mean training loss is NaN when no update since the last evaluation brought one)."""
    with recorder.watch.section("evaluation"):
        set_flat(eval_model, server.weights)
        ev = evaluate(eval_model, data.test_x, data.test_y)
    recorder.record(
        tally.arrivals,
        ev,
        sim_time=sim_time,
        samples_trained=tally.samples_trained,
        client_updates=tally.arrivals,
        train_loss=tally.loss_sum / tally.loss_samples if tally.loss_samples else float("nan"),
        version=server.version,
    )
