"""Real asynchrony across processes: the server takes whichever update comes first and sends that worker more work.

Each worker trains one client at a time. When its update arrives the server
applies it with :class:`fedlearn.asynchronous.AsyncServer` (FedAsync or
FedBuff, staleness = versions since the model the job started from) and sends
that worker the current model with one of its clients, drawn from the seed.
A worker whose link breaks, or that stays silent past ``--timeout``, is
dropped: its job is given to nobody, the run goes on with the others and the
loss is reported.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import seeding
from ..asynchronous import TITLES, AsyncServer, AsyncTally, async_checkpoint, record_evaluation
from ..checkpoint import Checkpointing, save_checkpoint
from ..client import LocalTrainer
from ..errors import DataError
from ..progress import progress_bar
from ..results import RunRecorder
from . import wire
from .cluster import Placement
from .inbox import Inbox, Job, Lost, protocol_violation


@dataclass
class _InFlight:
    """A job a worker is training: what it was asked (checked against its answer) and the model it was sent."""

    job: Job
    start: torch.Tensor


def run_async_distributed(
    server: AsyncServer,
    inbox: Inbox,
    placement: Placement,
    trainer: LocalTrainer,
    eval_model: nn.Module,
    *,
    max_updates: int,
    eval_every: int,
    seed: int,
    timeout_s: float,
    target_accuracy: float | None = None,
    show_progress: bool = True,
    checkpointing: Checkpointing | None = None,
    resume: dict[str, Any] | None = None,
) -> tuple[RunRecorder, list[dict[str, Any]]]:
    """Receive ``max_updates`` updates from the workers as they come; returns the record and the lost workers.

    A worker whose answer breaks the protocol (:func:`fedlearn.distributed.protocol_violation`)
    is dropped like a lost one, and its update counted as rejected (``unexpected``).
    ``checkpointing.every`` counts received updates; a resumed run continues from
    the saved server state (jobs in flight at the checkpoint are dispatched again).
    """
    rng = seeding.numpy_rng(seed, seeding.DISPATCH)
    recorder = RunRecorder(target_accuracy)
    tally, next_key, lost = AsyncTally(), 0, []
    if resume is not None:
        tally, next_key, lost = _restore(resume, server, recorder, rng)
    workers = _Workers(placement, inbox, server, rng, next_key, lost, tally)
    workers.start(max_updates)
    title = TITLES[server.config.algorithm]
    with progress_bar(
        max_updates, f"{title} (distributed)", show_progress, unit="update", initial=tally.arrivals
    ) as bar:
        while tally.arrivals < max_updates and workers.in_flight:
            with recorder.watch.section("training"):  # waiting for the workers
                event = inbox.get(timeout_s)
            flight = workers.answer_to(event, trainer)
            if flight is None:
                continue
            with recorder.watch.section("aggregation"):
                num_samples = trainer.num_samples(flight.job.client)
                accepted = server.receive(
                    event.weights, flight.start, flight.job.version, flight.job.client, num_samples
                )
            tally.count(event.samples_trained, accepted)
            if math.isfinite(event.mean_loss):
                tally.add_loss(event.mean_loss, event.samples_trained)
            bar.update(1)
            if tally.arrivals + len(workers.in_flight) < max_updates:
                workers.dispatch(event.source)
            regular = tally.accepted_since_eval >= eval_every
            if regular:
                record_evaluation(recorder, eval_model, server, trainer.data, None, tally)
                tally.evaluated()
            if checkpointing is not None and (
                tally.arrivals % checkpointing.every == 0 or tally.arrivals == max_updates
            ):
                save_checkpoint(checkpointing.path, _checkpoint(checkpointing, server, recorder, tally, workers))
            if tally.arrivals == max_updates and not regular:  # the budget is spent: the final model's figures
                record_evaluation(recorder, eval_model, server, trainer.data, None, tally)
            if recorder.history:
                last = recorder.history[-1]
                bar.set_postfix_str(
                    f"v{server.version} acc {last['test_accuracy']:.2%} loss {last['test_loss']:.4f}", refresh=False
                )
    if tally.arrivals < max_updates:
        print(f"every worker was lost: stopping after {tally.arrivals} of {max_updates} updates", file=sys.stderr,
              flush=True)  # fmt: skip
    if not recorder.history or recorder.history[-1]["step"] != tally.arrivals:
        record_evaluation(recorder, eval_model, server, trainer.data, None, tally)
    workers.stop(timeout_s)
    return recorder, workers.lost


class _Workers:
    """The server's view of its workers: who is live, what each is training, who was lost and why."""

    def __init__(
        self,
        placement: Placement,
        inbox: Inbox,
        server: AsyncServer,
        rng: np.random.Generator,
        next_key: int,
        lost: list[dict[str, Any]],
        tally: AsyncTally,
    ) -> None:
        self.placement, self.inbox, self.server, self.rng = placement, inbox, server, rng
        self.next_key, self.lost, self.tally = next_key, lost, tally
        gone = {entry["rank"] for entry in lost}
        self.live = [rank for rank in placement.workers if rank not in gone]
        self.in_flight: dict[int, _InFlight] = {}
        self.sending: dict[int, wire.Sending] = {}  # the last task sent to each worker, until it is answered

    def start(self, max_updates: int) -> None:
        """Give every live worker a job, as far as the budget goes."""
        for rank in list(self.live):
            if self.tally.arrivals + len(self.in_flight) < max_updates:
                self.dispatch(rank)

    def dispatch(self, rank: int) -> None:
        """Send worker ``rank`` the current model with one of its clients, drawn from the seed."""
        hosted = self.placement.clients_of(rank)
        client = hosted[int(self.rng.integers(len(hosted)))]
        self.next_key += 1
        self.inbox.expect(rank, 1)
        try:
            self.sending[rank] = wire.send_task(rank, self.next_key, self.server.version, [client], self.server.weights)
        except Exception:  # noqa: BLE001 - the link is gone
            self.lose(rank, "link closed (process gone?)")
            return
        self.in_flight[rank] = _InFlight(Job(rank, client, self.next_key, self.server.version), self.server.weights)

    def answer_to(self, event: wire.WireUpdate | Lost | None, trainer: LocalTrainer) -> _InFlight | None:
        """The job ``event`` answers (no longer in flight then); None for silence, a loss or a violation."""
        if event is None:
            for rank in list(self.in_flight):
                self.lose(rank, "silent past --timeout")
            return None
        if event.source not in self.live:  # queued before its worker was dropped: never read
            return None
        if isinstance(event, Lost):
            for _ in range(event.rejected):
                self.server.aggregator.note_rejected("unexpected")  # never applied
            self.lose(event.rank, event.reason)
            return None
        flight = self.in_flight.get(event.source)
        reason = protocol_violation(event, flight.job if flight else None, trainer)
        if reason is not None:
            self.server.aggregator.note_rejected("unexpected")  # never applied
            self.lose(event.source, f"protocol violation: {reason}")
            return None
        del self.in_flight[event.source]
        return flight

    def lose(self, rank: int, reason: str) -> None:
        """Stop using worker ``rank``: its job is given to nobody, and it is not listened to again."""
        self.inbox.drop(rank)
        if rank in self.live:
            self.live.remove(rank)
            self.in_flight.pop(rank, None)
            self.lost.append({"rank": rank, "reason": reason, "after_updates": self.tally.arrivals})
            print(f"worker rank {rank} lost after {self.tally.arrivals} updates: {reason}; going on with the others",
                  file=sys.stderr, flush=True)  # fmt: skip

    def stop(self, timeout_s: float) -> None:
        """Tell the live workers the run is over and wait for their goodbyes."""
        self.inbox.close()
        for rank in self.live:
            try:
                wire.send_stop(rank)
            except Exception:  # noqa: BLE001 - gone already: nothing to stop
                pass
        self.inbox.join(timeout_s, self.live)


def _checkpoint(
    checkpointing: Checkpointing, server: AsyncServer, recorder: RunRecorder, tally: AsyncTally, workers: _Workers
) -> dict[str, Any]:
    return {
        **async_checkpoint("distributed", checkpointing, server, recorder, tally),
        "next_key": workers.next_key,
        "rng": workers.rng.bit_generator.state,
        "lost": workers.lost,
    }


def _restore(
    resume: dict[str, Any], server: AsyncServer, recorder: RunRecorder, rng: np.random.Generator
) -> tuple[AsyncTally, int, list[dict[str, Any]]]:
    """Continue from a checkpoint: the loop's figures, the next job key and the workers lost so far."""
    if resume.get("mode") != "distributed":
        raise DataError("--resume: this checkpoint is of a simulated run; resume it without --distributed")
    server.restore(resume["server"])
    recorder.restore(resume["record"])
    rng.bit_generator.state = resume["rng"]
    return AsyncTally.from_state(resume), resume["next_key"], list(resume["lost"])
