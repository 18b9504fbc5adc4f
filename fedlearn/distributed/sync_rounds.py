"""Synchronous FedAvg rounds over the workers (a round executor for :func:`fedlearn.loops.rounds.run_fedavg`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..client import ClientUpdate, LocalTrainer
from ..loops.rounds import RoundTask
from . import wire
from .cluster import WorkerLost
from .inbox import Job, Links, Lost, loss_reason, protocol_violation, stop_workers, to_client_update


def _stop(who: str, round_index: int) -> WorkerLost:
    """Why a synchronous run cannot go on."""
    return WorkerLost(
        f"{who} in round {round_index}; synchronous FedAvg needs every picked client, so the run stops "
        "(continue it with --resume from a --checkpoint)"
    )


class DistributedRounds:
    """Synchronous rounds over the workers: send each worker the model and its picked clients, gather the updates.

    A lost worker ends the run (:class:`WorkerLost`): FedAvg's rounds need every
    picked client; ``--checkpoint`` / ``--resume`` continue it after a restart. So
    does a protocol violation (:func:`protocol_violation`): the offending update is
    never applied, and the worker that sent it is trusted no more.
    """

    def __init__(self, links: Links, trainer: LocalTrainer) -> None:
        self.placement, self.inbox, self.timeout_s = links.placement, links.inbox, links.timeout_s
        self.trainer = trainer
        self.unexpected = 0  # protocol violations (the run stops at the first)

    def __call__(self, task: RoundTask, progress: Callable[[float], None]) -> list[ClientUpdate]:
        """The picked clients' updates, in ``picked`` order; with SCAFFOLD's control variate the task carries
        it after the weights, and each update its ``delta c_i`` after the weights."""
        picked, weights, round_index, control = task.picked, task.weights, task.round_index, task.control
        jobs = {c: Job(self.placement.worker_of(c), c, round_index, round_index - 1) for c in picked}
        self._send(jobs, weights if control is None else torch.cat([weights, control.to(weights.dtype)]), round_index)
        got: dict[int, ClientUpdate] = {}
        while len(got) < len(jobs):
            event = self.inbox.get(self.timeout_s)
            if event is None or isinstance(event, Lost):
                who = (
                    f"worker rank {event.rank} lost ({event.reason})"
                    if event
                    else f"no update for {self.timeout_s:g} s"
                )
                raise _stop(who, round_index)
            job = jobs.get(event.client) if event.client not in got else None
            reason = protocol_violation(event, job, self.trainer)
            if reason is not None:
                self.unexpected += 1
                self.inbox.drop(event.source)
                raise _stop(f"worker rank {event.source} broke the protocol: {reason}", round_index)
            got[event.client] = to_client_update(event, self.trainer.num_samples(event.client), weights.numel(),
                                                 with_control=control is not None)  # fmt: skip
            progress(1.0)
        return [got[c] for c in picked]

    def _send(self, jobs: dict[int, Job], weights: torch.Tensor, round_index: int) -> None:
        """One task per worker: the model and the clients it hosts among the picked ones."""
        by_worker: dict[int, list[int]] = {}
        for job in jobs.values():
            by_worker.setdefault(job.rank, []).append(job.client)
        for rank, clients in by_worker.items():
            self.inbox.expect(rank, len(clients))
            try:
                wire.send_task(rank, round_index, round_index - 1, clients, weights).wait()
            except Exception as exc:  # noqa: BLE001 - the link is gone
                raise _stop(f"worker rank {rank} lost ({loss_reason(exc)})", round_index) from None

    def finish(self) -> None:
        """Tell every worker still listened to to stop."""
        stop_workers(self.inbox, self.timeout_s)
