"""A run's processes: this one alone, with ``--workers`` processes it starts, or one rank of a ``--distributed``
run started by torchrun; what each worker process does, and how the server reaches the workers."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import torch.distributed as dist

from .. import compose
from ..client import LocalTrainer
from ..comm.clock import ClientSpeeds
from ..config import RunConfig, Script
from ..core.runtime import usable_cores
from ..data import Dataset, resolve_dataset
from ..data.partitions import ClientPartition
from .cluster import Placement, WorkerLost, agree_on_setup, first_line, join_process_group, leave_process_group
from .inbox import Inbox, Links
from .pool import PoolJobs, PoolSpec, WorkerPool
from .worker import serve_clients

T = TypeVar("T")


@dataclass(frozen=True)
class Cluster:
    """This process's place in a ``--distributed`` run."""

    rank: int
    world: int
    local_rank: int


@dataclass(frozen=True)
class Processes:
    """The run's other processes: torchrun's (``--distributed``) or this process's workers (``--workers``)."""

    cluster: Cluster | None = None
    pool: WorkerPool | None = None


def with_processes(cfg: RunConfig, body: Callable[[Processes], T]) -> T:
    """Run ``body`` with the run's processes set up, and tear them down after (however it ends)."""
    if not cfg.multi.distributed:
        pool = spawn_workers(cfg)  # first: they start up while this process loads the data
        try:
            return body(Processes(pool=pool))
        finally:
            if pool is not None:
                pool.kill()  # after a clean close, only what is left of processes that said BYE
    rank, world, local_rank = join_process_group(cfg.multi.timeout)
    try:
        return body(Processes(cluster=Cluster(rank, world, local_rank)))
    finally:
        leave_process_group()


def spawn_workers(cfg: RunConfig) -> WorkerPool | None:
    """The worker processes ``--workers`` asks for in a federated simulation (None: clients train here)."""
    if cfg.multi.workers == 1 or cfg.script is Script.BASELINE:
        return None
    return WorkerPool(PoolSpec(cfg.multi.workers, worker_threads(cfg), cfg.multi.timeout))


def worker_threads(cfg: RunConfig) -> int:
    """Torch threads per worker process: as asked, else the cores shared out."""
    return cfg.multi.threads_per_worker or max(1, usable_cores() // cfg.multi.workers)


def note_workers(cfg: RunConfig, context: dict[str, Any]) -> None:
    """Say in the Hyperparameters how the clients train, when --workers asks for processes."""
    if cfg.multi.workers > 1 and not cfg.multi.distributed:
        context["workers"] = (f"{cfg.multi.workers} processes x {worker_threads(cfg)} torch threads "
                              "(training data in shared memory)")  # fmt: skip


def _notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_data(cfg: RunConfig, cluster: Cluster | None) -> tuple[str, str]:
    """The dataset to use, its files ready; in a distributed run one process per machine fetches it first, the
    others wait (and only rank 0 says anything)."""
    resolve = partial(resolve_dataset, cfg.data.dataset, cfg.data.data_dir, download=cfg.data.download,
                      flags=cfg.flags)  # fmt: skip
    if cluster is None:
        return resolve(notify=_notice)
    quiet = (lambda message: None) if cluster.rank != 0 else _notice
    first = cluster.local_rank == 0
    if first:
        resolved = resolve(notify=quiet)
    dist.barrier()
    if not first:
        resolved = resolve(notify=quiet)
    return resolved


def serve(cfg: RunConfig, data: Dataset, partition: ClientPartition, cluster: Cluster) -> int:
    """A worker process: host its share of the clients until the server says stop."""
    clients = compose.setup_clients(cfg, data, partition, {})
    dim = sum(p.numel() for p in clients.trainer.params)
    agree_on_setup(cluster.rank, dim, cfg.federation.num_clients, data.train_y, cfg.training.seed)
    emulate = cfg.clock.delay != "none" or cfg.clock.comm_delay > 0 or cfg.clock.limits_links
    try:
        serve_clients(clients.trainer, clients.speeds, emulate_delay=emulate)
    except RuntimeError as exc:  # gloo: the server's link broke or stayed silent past --timeout
        reason = first_line(exc)
        raise WorkerLost(f"worker rank {cluster.rank} lost the server: {reason}") from None
    return 0


def server_links(cfg: RunConfig, data: Dataset, trainer: LocalTrainer, cluster: Cluster) -> Links:
    """The server's side of a distributed run: check the workers set up alike, then listen to each."""
    dim = sum(p.numel() for p in trainer.params)
    agree_on_setup(0, dim, cfg.federation.num_clients, data.train_y, cfg.training.seed)
    placement = Placement(cfg.federation.num_clients, cluster.world)
    payload = 2 * dim if trainer.sends_control else dim  # weights, then SCAFFOLD's delta c_i
    return Links(placement, Inbox(placement.workers, payload), cfg.multi.timeout)


@contextmanager
def pool_jobs(
    cfg: RunConfig, data: Dataset, partition: ClientPartition, trainer: LocalTrainer, pool: WorkerPool | None
) -> Iterator[PoolJobs | None]:
    """Hand the workers their clients (the training data through shared memory) and stop them at the end; None
    without workers."""
    if pool is None:
        yield None
        return
    pool.start(partial(pool_clients, replace(cfg, flags=dict(cfg.flags)), data.shared_for_training(), partition),
               trainer)  # fmt: skip
    pinned = bool(trainer.client_state_keys)  # what a client keeps between jobs lives on one worker
    yield PoolJobs(pool, trainer, pinned, with_control=trainer.sends_control)
    pool.close()


def pool_clients(cfg: RunConfig, data: Dataset, partition: ClientPartition) -> tuple[LocalTrainer, ClientSpeeds]:
    """A pool worker's trainer (built in the worker from the shared data)."""
    clients = compose.setup_clients(cfg, data, partition, {})
    return clients.trainer, clients.speeds
