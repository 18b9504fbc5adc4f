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

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import seeding, wire
from .asynchronous import TITLES, AsyncServer, record_evaluation
from .checkpoint import Checkpointing, save_checkpoint
from .client import LocalTrainer
from .distributed import Inbox, Lost, Placement
from .errors import DataError
from .progress import progress_bar
from .results import RunRecorder


@dataclass
class _Job:
    client: int
    key: int
    start: torch.Tensor
    tau: int


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

    ``checkpointing.every`` counts received updates; a resumed run continues from
    the saved server state (jobs in flight at the checkpoint are dispatched again).
    """
    data = trainer.data
    rng = seeding.numpy_rng(seed, seeding.DISPATCH)
    recorder = RunRecorder(target_accuracy)
    arrivals, next_key, samples_trained, accepted_since_eval = 0, 0, 0, 0
    loss_sum, loss_samples = 0.0, 0
    lost: list[dict[str, Any]] = []
    if resume is not None:
        if resume.get("mode") != "distributed":
            raise DataError("--resume: this checkpoint is of a simulated run; resume it without --distributed")
        server.restore(resume["server"])
        recorder.restore(resume["record"])
        arrivals, next_key, samples_trained = resume["arrivals"], resume["next_key"], resume["samples_trained"]
        accepted_since_eval, loss_sum, loss_samples = resume["accepted_since_eval"], resume["loss_sum"], resume["loss_samples"]
        rng.bit_generator.state = resume["rng"]
        lost = list(resume["lost"])
    live = [rank for rank in placement.workers if rank not in {entry["rank"] for entry in lost}]
    in_flight: dict[int, _Job] = {}

    def dispatch(rank: int) -> None:
        nonlocal next_key
        hosted = placement.clients_of(rank)
        client = hosted[int(rng.integers(len(hosted)))]
        next_key += 1
        try:
            wire.send_task(rank, next_key, server.version, [client], server.weights)
        except Exception:  # noqa: BLE001 - the link is gone
            lose(rank, "link closed (process gone?)")
            return
        in_flight[rank] = _Job(client, next_key, server.weights, server.version)

    def lose(rank: int, reason: str) -> None:
        if rank in live:
            live.remove(rank)
            in_flight.pop(rank, None)
            lost.append({"rank": rank, "reason": reason, "after_updates": arrivals})
            print(f"worker rank {rank} lost after {arrivals} updates: {reason}; going on with the others",
                  file=sys.stderr, flush=True)  # fmt: skip

    for rank in list(live):
        if arrivals + len(in_flight) < max_updates:
            dispatch(rank)
    title = TITLES[server.config.algorithm]
    with progress_bar(max_updates, f"{title} (distributed)", show_progress, unit="update", initial=arrivals) as bar:
        while arrivals < max_updates and in_flight:
            with recorder.watch.section("training"):  # waiting for the workers
                event = inbox.get(timeout_s)
            if event is None:
                for rank in list(in_flight):
                    lose(rank, "silent past --timeout")
                continue
            if isinstance(event, Lost):
                lose(event.rank, event.reason)
                continue
            job = in_flight.get(event.source)
            if job is None or (event.client, event.job_key) != (job.client, job.key):
                server.aggregator.note_rejected("unexpected")  # not the job this worker was given
                continue
            del in_flight[event.source]
            with recorder.watch.section("aggregation"):
                num_samples = trainer.num_samples(job.client)
                accepted_since_eval += server.receive(event.weights, job.start, job.tau, job.client, num_samples)
            arrivals += 1
            bar.update(1)
            samples_trained += event.samples_trained
            if np.isfinite(event.mean_loss):
                loss_sum += event.mean_loss * event.samples_trained
                loss_samples += event.samples_trained
            if arrivals + len(in_flight) < max_updates:
                dispatch(event.source)
            regular = accepted_since_eval >= eval_every
            if regular:
                accepted_since_eval = 0
                _record(recorder, eval_model, server, data, arrivals, samples_trained, loss_sum, loss_samples)
                loss_sum, loss_samples = 0.0, 0
            if checkpointing is not None and (arrivals % checkpointing.every == 0 or arrivals == max_updates):
                save_checkpoint(
                    checkpointing.path,
                    {
                        "script": "run_async",
                        "mode": "distributed",
                        "args": checkpointing.args,
                        "server": server.state(),
                        "record": recorder.state(),
                        "arrivals": arrivals,
                        "next_key": next_key,
                        "samples_trained": samples_trained,
                        "accepted_since_eval": accepted_since_eval,
                        "loss_sum": loss_sum,
                        "loss_samples": loss_samples,
                        "rng": rng.bit_generator.state,
                        "lost": lost,
                    },
                )
            if arrivals == max_updates and not regular:  # the budget is spent: the final model's figures
                _record(recorder, eval_model, server, data, arrivals, samples_trained, loss_sum, loss_samples)
            if recorder.history:
                last = recorder.history[-1]
                bar.set_postfix_str(
                    f"v{server.version} acc {last['test_accuracy']:.2%} loss {last['test_loss']:.4f}", refresh=False
                )
    if arrivals < max_updates:
        print(f"every worker was lost: stopping after {arrivals} of {max_updates} updates", file=sys.stderr, flush=True)
    if not recorder.history or recorder.history[-1]["step"] != arrivals:
        _record(recorder, eval_model, server, data, arrivals, samples_trained, loss_sum, loss_samples)
    inbox.close()
    for rank in live:
        try:
            wire.send_stop(rank)
        except Exception:  # noqa: BLE001 - gone already: nothing to stop
            pass
    inbox.join(timeout_s)
    return recorder, lost



def _record(
    recorder: RunRecorder,
    eval_model: nn.Module,
    server: AsyncServer,
    data: Any,
    arrivals: int,
    samples_trained: int,
    loss_sum: float,
    loss_samples: int,
) -> None:
    """Evaluate and record, with no simulated clock; the mean loss is NaN when no update brought one."""
    train_loss = loss_sum / loss_samples if loss_samples else float("nan")
    record_evaluation(recorder, eval_model, server, data, None, arrivals, samples_trained, train_loss)
