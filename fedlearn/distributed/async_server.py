"""Real asynchrony across processes: the server takes whichever update comes first and sends that worker more work.

Each worker trains one client at a time. When its update arrives the server
applies it with :class:`fedlearn.server.asynchronous.AsyncServer` (FedAsync or
FedBuff, staleness = versions since the model the job started from) and sends
that worker the current model with one of its clients, drawn from the seed.
A worker whose link breaks, or that stays silent past ``--timeout``, is
dropped: its job is given to nobody, the run goes on with the others and the
loss is reported.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from ..client import LocalTrainer
from ..core import seeding
from ..events.recorder import RunRecorder
from ..loops.skeleton import LoopOptions, RunState, Tally
from ..loops.virtual_clock import Updates, async_fields, restore_server
from ..server.asynchronous import AsyncServer, title
from . import wire
from .inbox import Job, Links, Lost, protocol_violation, stop_workers


@dataclass
class _InFlight:
    """A job a worker is training: what it was asked (checked against its answer) and the model it was sent."""

    job: Job
    start: torch.Tensor


def run_async_distributed(
    server: AsyncServer,
    links: Links,
    trainer: LocalTrainer,
    eval_model: nn.Module,
    budget: Updates,
    options: LoopOptions = LoopOptions(),
) -> tuple[RunRecorder, list[dict[str, Any]]]:
    """Receive ``budget.max_updates`` updates from the workers as they come; returns the record and the lost
    workers.

    A worker whose answer breaks the protocol (:func:`fedlearn.distributed.inbox.protocol_violation`)
    is dropped like a lost one, and its update counted as rejected (``unexpected``).
    Checkpoints count received updates; a resumed run continues from the saved
    server state (jobs in flight at the checkpoint are dispatched again).
    """
    state = RunState(eval_model, trainer.data, options)
    rng, next_key, lost = seeding.numpy_rng(options.seed, seeding.DISPATCH), 0, []
    if state.resume is not None:
        restore_server(state, server, "distributed")
        rng.bit_generator.state = state.resume["rng"]
        next_key, lost = state.resume["next_key"], list(state.resume["lost"])
    tally, max_updates = state.tally, budget.max_updates
    workers = _Workers(links, server, rng, next_key, lost, tally)
    workers.start(max_updates)
    with state.progress(f"{title(server.config.algorithm)} (distributed)", max_updates, tally.arrivals) as advance:
        while tally.arrivals < max_updates and workers.in_flight:
            with state.watch.section("training"):  # waiting for the workers
                event = links.inbox.get(links.timeout_s)
            flight = workers.answer_to(event, trainer)
            if flight is None:
                continue
            with state.watch.section("aggregation"):
                num_samples = trainer.num_samples(flight.job.client)
                accepted = server.receive(event.payload, flight.start, flight.job.version, flight.job.client,
                                          num_samples)  # fmt: skip
            up, down = (t.numel() * t.element_size() for t in (event.payload, flight.start))
            tally.count(event.samples_trained, event.mean_loss, accepted, up=up, down=down)
            advance(1)
            if tally.arrivals + len(workers.in_flight) < max_updates:
                workers.dispatch(event.source)
            if tally.accepted_since_eval >= budget.eval_every:
                state.evaluate(server.weights, tally.arrivals, None, version=server.version)
            state.checkpoint(tally.arrivals, max_updates, partial(_checkpoint, server, tally, workers))
            state.show(f"update {tally.arrivals}/{max_updates} v{server.version}")
    if tally.arrivals < max_updates:
        print(f"every worker was lost: stopping after {tally.arrivals} of {max_updates} updates", file=sys.stderr,
              flush=True)  # fmt: skip
    state.finish(server.weights, tally.arrivals, None, version=server.version)
    workers.stop()
    return state.recorder, workers.lost


class _Workers:
    """The server's view of its workers: who is live, what each is training, who was lost and why."""

    def __init__(
        self,
        links: Links,
        server: AsyncServer,
        rng: np.random.Generator,
        next_key: int,
        lost: list[dict[str, Any]],
        tally: Tally,
    ) -> None:
        self.placement, self.inbox, self.timeout_s = links.placement, links.inbox, links.timeout_s
        self.server, self.rng = server, rng
        self.next_key, self.lost, self.tally = next_key, lost, tally
        gone = {entry["rank"] for entry in lost}
        self.live = [rank for rank in self.placement.workers if rank not in gone]
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

    def stop(self) -> None:
        """Tell the live workers the run is over and wait for their goodbyes."""
        stop_workers(self.inbox, self.timeout_s, self.live)


def _checkpoint(server: AsyncServer, tally: Tally, workers: _Workers) -> dict[str, Any]:
    return {
        **async_fields("distributed", server, tally),
        "next_key": workers.next_key,
        "rng": workers.rng.bit_generator.state,
        "lost": workers.lost,
    }
