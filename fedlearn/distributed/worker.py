"""A worker's loop: train the clients each task names and reply with their updates, until told to stop."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from ..client import LocalTrainer
from ..comm.clock import ClientSpeeds
from . import wire


def serve_clients(trainer: LocalTrainer, speeds: ClientSpeeds, emulate_delay: bool) -> int:
    """A worker's loop: train the clients each task names, reply with their updates, until told to stop.

    With ``emulate_delay`` a client ``k`` times slower than the fastest (``--delay``) sleeps
    ``(k - 1)`` times its real training time, plus ``--comm_delay`` seconds and its link's transfer time
    (``--uplink_mbps``, ...), before replying.
    Returns the number of jobs done. With SCAFFOLD a task carries the weights and the server's control
    variate ``c`` end to end, and an update the weights and ``delta c_i``; the clients' own ``c_i`` stay here.
    """
    dim, rank = sum(p.numel() for p in trainer.params), dist.get_rank()
    fastest = float(speeds.rates.max())
    jobs = 0
    while True:
        task = wire.recv_task(2 * dim if trainer.sends_control else dim)  # SCAFFOLD: the weights, then c
        if task.kind == wire.STOP:
            wire.send_bye()
            return jobs
        received = task.weights.to(trainer.params[0].device)  # the wire is CPU; the model may be on CUDA
        weights, control = (received[:dim], received[dim:]) if trainer.sends_control else (received, None)
        for client in task.clients:
            began = time.perf_counter()
            update = trainer.run(client, weights, task.job_key, control=control)
            if emulate_delay:
                slowdown = fastest / float(speeds.rates[client])
                transfer = speeds.links.transfer_seconds(client) if speeds.links is not None else 0.0
                time.sleep((slowdown - 1.0) * (time.perf_counter() - began) + speeds.comm_delay + transfer)
            stats = update.stats
            payload = (
                update.payload if update.control_delta is None else torch.cat([update.payload, update.control_delta])
            )
            frame = wire.WireUpdate(rank, client, task.job_key, task.version, update.num_samples, stats.samples,
                                    stats.batches, stats.mean_loss, payload)  # fmt: skip
            wire.send_update(frame)
            jobs += 1
