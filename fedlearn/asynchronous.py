"""Asynchronous aggregation (FedAsync, FedBuff) on the virtual clock.

``AsyncServer`` is what the server does with an arriving update, whatever
carries it; ``run_async`` drives it with in-process clients on the timeline
that :func:`fedlearn.clock.plan_async_jobs` fixes from the seed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import seeding
from .aggregation import fedasync_mix
from .byzantine import RobustAggregator
from .checkpoint import Checkpointing, save_checkpoint
from .client import LocalTrainer
from .clock import ClientSpeeds, plan_async_jobs
from .data import Dataset
from .errors import DataError
from .flat import set_flat
from .progress import progress_bar
from .results import RunRecorder
from .staleness import staleness_weight
from .training import evaluate
from .update_checks import rejection_reason

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
    Every update goes through ``aggregator`` (attack simulation, checks,
    clipping, rule): alone for FedAsync, as the whole buffer for FedBuff, whose
    mean the rule replaces; a rejected update is counted and not applied.
    The server replaces ``weights`` on every step, never changes it in place,
    so a reference taken at dispatch stays the model that was sent.
    """

    def __init__(self, weights: torch.Tensor, config: AsyncConfig, aggregator: RobustAggregator | None = None):
        if config.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {config.algorithm!r}")
        self.config = config
        self.aggregator = aggregator or RobustAggregator(weights.numel())
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
            sent = self.aggregator.combine(
                [client_weights], [client], [num_samples], key=self.received, origin=start_weights
            )
            if sent is None:  # rejected by the checks (and counted there)
                return False
            self.weights = fedasync_mix(self.weights, sent, cfg.alpha * weight)
            self.version += 1
            return True
        self._deltas.append(client_weights - start_weights)
        self._scales.append(weight)
        self._clients.append(client)
        self._counts.append(num_samples)
        if len(self._deltas) == cfg.buffer_size:
            step = self.aggregator.combine(
                self._deltas, self._clients, self._counts, key=self.received, scales=self._scales
            )
            if step is not None:  # else every buffered delta was rejected: no step
                self.weights = self.weights + cfg.server_lr * step
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
    is fixed by the seed, so a run resumed from a checkpoint (taken every
    ``checkpointing.every`` updates, with the models in-flight jobs started from)
    ends as an uninterrupted one.
    """
    num_clients = len(trainer.partitions)
    job_samples = [trainer.num_samples(c) * trainer.config.epochs for c in range(num_clients)]
    rng = seeding.numpy_rng(seed, seeding.DISPATCH)
    # planned past the budget, so that the models of jobs in flight at the end are known (and checkpointed)
    planned = plan_async_jobs(speeds, job_samples, concurrency, max_updates + concurrency, rng)
    jobs = planned[:max_updates]
    pending = Counter(job.dispatched_after for job in planned)
    sent = {0: (server.weights, server.version)}  # model (and version) as of k arrivals, while a job needs it
    data = trainer.data
    recorder = RunRecorder(target_accuracy)
    samples_trained, accepted_since_eval, done = 0, 0, 0
    loss_sum, loss_samples = 0.0, 0  # training loss of the jobs since the last evaluation
    if resume is not None:
        if resume.get("mode") != "simulated":
            raise DataError("--resume: this checkpoint is of a --distributed run; resume it with --distributed")
        server.restore(resume["server"])
        recorder.restore(resume["record"])
        done, samples_trained = resume["arrivals"], resume["samples_trained"]
        accepted_since_eval, loss_sum, loss_samples = resume["accepted_since_eval"], resume["loss_sum"], resume["loss_samples"]
        sent = {k: (w, v) for k, w, v in zip(resume["sent_keys"], resume["sent_weights"], resume["sent_versions"])}
        for job in planned[:done]:
            pending[job.dispatched_after] -= 1
    title = TITLES[server.config.algorithm]
    total_batches = sum(trainer.num_batches(job.client) for job in jobs[done:])
    with progress_bar(total_batches, title, enabled=show_progress) as bar:
        tick = lambda: bar.update(1)  # noqa: E731
        for job in jobs[done:]:
            start, tau = sent[job.dispatched_after]
            pending[job.dispatched_after] -= 1
            if pending[job.dispatched_after] == 0:
                del sent[job.dispatched_after]
            with recorder.watch.section("training"):
                update = trainer.run(job.client, start, job_key=job.index + 1, on_batch=tick)
            with recorder.watch.section("aggregation"):
                accepted_since_eval += server.receive(update.weights, start, tau, update.client, update.num_samples)
            arrivals = job.index + 1
            if pending[arrivals] > 0:
                sent[arrivals] = (server.weights, server.version)
            samples_trained += update.stats.samples
            loss_sum += update.stats.mean_loss * update.stats.samples
            loss_samples += update.stats.samples
            regular = accepted_since_eval >= eval_every
            if regular:
                accepted_since_eval = 0
                record_evaluation(recorder, eval_model, server, data, job.arrival_time, arrivals, samples_trained,
                        loss_sum / loss_samples)  # fmt: skip
                loss_sum, loss_samples = 0.0, 0
            if checkpointing is not None and (arrivals % checkpointing.every == 0 or arrivals == len(jobs)):
                save_checkpoint(
                    checkpointing.path,
                    {
                        "script": "run_async",
                        "mode": "simulated",
                        "args": checkpointing.args,
                        "server": server.state(),
                        "record": recorder.state(),
                        "arrivals": arrivals,
                        "samples_trained": samples_trained,
                        "accepted_since_eval": accepted_since_eval,
                        "loss_sum": loss_sum,
                        "loss_samples": loss_samples,
                        "sent_keys": list(sent),
                        "sent_weights": [w.detach().cpu() for w, _ in sent.values()],
                        "sent_versions": [v for _, v in sent.values()],
                    },
                )
            if arrivals == len(jobs) and not regular:  # the budget is spent: the final model's figures
                record_evaluation(recorder, eval_model, server, data, job.arrival_time, arrivals, samples_trained,
                        loss_sum / loss_samples)  # fmt: skip
            if recorder.history:
                last = recorder.history[-1]
                bar.set_postfix_str(
                    f"update {arrivals}/{len(jobs)} v{server.version} acc {last['test_accuracy']:.2%} "
                    f"loss {last['test_loss']:.4f}",
                    refresh=False,
                )
    return recorder


def record_evaluation(
    recorder: RunRecorder,
    eval_model: nn.Module,
    server: AsyncServer,
    data: Dataset,
    sim_time: float | None,
    arrivals: int,
    samples_trained: int,
    train_loss: float,
) -> None:
    """Evaluate the server's model and add the history entry after ``arrivals`` updates."""
    with recorder.watch.section("evaluation"):
        set_flat(eval_model, server.weights)
        ev = evaluate(eval_model, data.test_x, data.test_y)
    recorder.record(
        arrivals,
        ev,
        sim_time=sim_time,
        samples_trained=samples_trained,
        client_updates=arrivals,
        train_loss=train_loss,
        version=server.version,
    )
