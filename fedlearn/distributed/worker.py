"""A worker's loop: train the clients each task names and reply with their updates, until told to stop."""

from __future__ import annotations

import time

import torch.distributed as dist

from ..client import LocalTrainer
from ..clock import ClientSpeeds
from . import wire


def serve_clients(trainer: LocalTrainer, speeds: ClientSpeeds, emulate_delay: bool) -> int:
    """A worker's loop: train the clients each task names, reply with their updates, until told to stop.

    With ``emulate_delay`` a client ``k`` times slower than the fastest (``--delay``) sleeps
    ``(k - 1)`` times its real training time, plus ``--comm_delay`` seconds, before replying.
    Returns the number of jobs done.
    """
    dim, rank = sum(p.numel() for p in trainer.params), dist.get_rank()
    fastest = float(speeds.rates.max())
    jobs = 0
    while True:
        task = wire.recv_task(dim)
        if task.kind == wire.STOP:
            wire.send_bye()
            return jobs
        for client in task.clients:
            began = time.perf_counter()
            update = trainer.run(client, task.weights, task.job_key)
            if emulate_delay:
                slowdown = fastest / float(speeds.rates[client])
                time.sleep((slowdown - 1.0) * (time.perf_counter() - began) + speeds.comm_delay)
            stats = update.stats
            frame = wire.WireUpdate(rank, client, task.job_key, task.version, update.num_samples, stats.samples,
                                    stats.batches, stats.mean_loss, update.weights)  # fmt: skip
            wire.send_update(frame)
            jobs += 1
