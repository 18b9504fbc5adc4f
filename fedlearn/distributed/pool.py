"""Local worker processes for the simulation (``--workers N``): clients train in parallel, the numbers unchanged.

This process (the server, rank 0) spawns N workers and joins them in a gloo
process group on the loopback interface. Each worker runs the same loop as a
``--distributed`` worker (:func:`.worker.serve_clients`) over a trainer built
from the dataset this process loaded, which reaches it through shared memory
(mapped, never copied per worker or per client). Jobs and updates travel as in
``--distributed`` (:mod:`.wire`) and every update is checked the same way
(:func:`.inbox.protocol_violation`). A job depends only on (weights, client
data, seed, job key, client), so a run with N workers equals one with 1.
"""

from __future__ import annotations

import heapq
import multiprocessing.connection
import multiprocessing.process
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from multiprocessing.connection import Connection

import torch
import torch.distributed as dist
import torch.multiprocessing

from ..client import ClientUpdate, LocalTrainer
from ..comm.clock import AsyncTimeline, ClientSpeeds, PlannedJob
from ..core.runtime import make_deterministic
from ..loops.rounds import RoundExecutor, RoundTask
from . import wire
from .cluster import Placement, WorkerLost, first_line, leave_process_group
from .handover import Orders, take
from .inbox import SILENT, Inbox, Job, Lost, loss_reason, protocol_violation, stop_workers, to_client_update
from .worker import serve_clients

ClientFactory = Callable[[], tuple[LocalTrainer, ClientSpeeds]]
"""Builds a worker's trainer (picklable: it travels to the spawned process with the shared data it closes over)."""

TASKS_PER_WORKER = 2  # one training, one waiting: a worker never idles while the server aggregates or evaluates


@dataclass(frozen=True)
class PoolSpec:
    """How many worker processes, how many torch threads each, how long any wait may last."""

    workers: int
    threads: int
    timeout_s: float


def _worker_main(rank: int, world: int, port: int, spec: PoolSpec, orders: Connection) -> None:
    """A worker process: wait for its clients' factory, join the group, build the trainer, serve until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the server decides
    try:
        torch.set_num_threads(spec.threads)
        make_deterministic()
        build: ClientFactory = take(orders)  # the data it closes over arrive as shared memory
        orders.close()
        timeout = timedelta(seconds=spec.timeout_s)
        store = dist.TCPStore("127.0.0.1", port, world, is_master=False, timeout=timeout)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
        trainer, speeds = build()
        serve_clients(trainer, speeds, emulate_delay=False)
    except EOFError:  # the server ended before handing over the clients: nothing to report
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - one line, no traceback; the server reports the loss
        if "closed by peer" not in str(exc):  # else the server closed the link (it gave up): it names whom to blame
            print(f"fedlearn worker {rank}: {first_line(exc)}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        leave_process_group()


class WorkerPool:
    """N worker processes joined to this one (rank 0) in a loopback gloo group, listened to by an inbox.

    The processes are started first (:meth:`__init__`: they come up while this
    process loads the data), then handed their clients (:meth:`start`).
    """

    def __init__(self, spec: PoolSpec) -> None:
        self.spec = spec
        world, timeout = spec.workers + 1, timedelta(seconds=spec.timeout_s)
        self._store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, timeout=timeout, wait_for_workers=False)
        self.processes: dict[int, multiprocessing.process.BaseProcess] = {}
        self._orders: dict[int, Connection] = {}
        self._failure: list[BaseException] = []
        self._stopping = threading.Event()
        self._spawning = threading.Thread(target=self._spawn, name="pool-spawn", daemon=True)
        self._spawning.start()  # the fork server's start-up blocks: let this process go on meanwhile
        self.inbox: Inbox | None = None

    def _spawn(self) -> None:
        """Start the workers from a fork server, which imports torch and fedlearn once for all of them (spawning
        each would import them N times); it has run no torch op, so every child starts with a clean thread pool."""
        try:
            context = torch.multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["fedlearn.distributed.forkserver_signals", "fedlearn.app"])
            world = self.spec.workers + 1
            for rank in range(1, world):
                if self._stopping.is_set():  # kill() came while spawning: start no more
                    return
                ours, theirs = context.Pipe()
                process = context.Process(target=_worker_main, args=(rank, world, self._store.port, self.spec, theirs),
                                          name=f"fedlearn-worker-{rank}", daemon=True)  # fmt: skip
                process.start()
                theirs.close()
                self.processes[rank], self._orders[rank] = process, ours
        except Exception as exc:  # noqa: BLE001 - reported by start()
            self._failure.append(exc)

    def start(self, build: ClientFactory, trainer: LocalTrainer) -> None:
        """Hand every worker the factory of its trainer (``trainer``: this process's like it, which sizes the
        updates), wait for all to join, then listen to each."""
        self._spawning.join()
        if self._failure:
            raise WorkerLost(f"--workers: the worker processes could not start: {first_line(self._failure[0])}")
        handed = Orders.of(build)
        for rank, orders in self._orders.items():
            try:
                handed.send(orders, partial(self._await, rank))
            except (OSError, EOFError):  # it is gone
                raise WorkerLost(f"--workers: {self.describe(rank, 'closed its link')} while starting") from None
            orders.close()
        self._join()
        dim = sum(p.numel() for p in trainer.params)
        self.inbox = Inbox(list(self.processes), 2 * dim if trainer.sends_control else dim)  # SCAFFOLD: + delta c_i

    def _join(self) -> None:
        """Join the group while watching the workers: one that dies while starting ends the wait at once."""
        failure: list[BaseException] = []

        def join() -> None:
            try:
                timeout = timedelta(seconds=self.spec.timeout_s)
                dist.init_process_group("gloo", store=self._store, rank=0, world_size=self.spec.workers + 1,
                                        timeout=timeout)  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - reported below
                failure.append(exc)

        joining = threading.Thread(target=join, name="pool-join", daemon=True)
        joining.start()
        while joining.is_alive():
            multiprocessing.connection.wait(self._sentinels(), timeout=0.1)
            self._check_started()
        if failure:
            raise WorkerLost(f"--workers: the workers did not join: {first_line(failure[0])}")

    def _await(self, rank: int, link: Connection) -> None:
        """Wait up to --timeout for worker ``rank`` to answer on ``link``; one that dies meanwhile ends the wait."""
        answered = multiprocessing.connection.wait([link, *self._sentinels()], self.spec.timeout_s)
        self._check_started()
        if not answered:
            raise WorkerLost(f"--workers: {self.describe(rank, self.silent())} while starting")

    def _sentinels(self) -> list[int]:
        """What becomes ready when a worker ends."""
        return [process.sentinel for process in self.processes.values()]

    def _check_started(self) -> None:
        """Raise if a worker has ended while starting."""
        for rank, process in self.processes.items():
            if process.exitcode is not None:
                raise WorkerLost(f"--workers: {self.describe(rank, 'stopped')} while starting")

    def describe(self, rank: int, reason: str) -> str:
        """Which worker, and what became of it (its exit status when it is gone, else ``reason``)."""
        process = self.processes[rank]
        process.join(0.5)
        code = process.exitcode
        if code is None:
            what = reason
        elif code < 0:
            what = f"killed by {signal.Signals(-code).name}"
        else:
            what = f"exited with status {code}"
        return f"worker {rank} of {len(self.processes)} (pid {process.pid}) {what}"

    def silent(self) -> str:
        """What became of a worker that stopped answering."""
        return f"did not answer within --timeout {self.spec.timeout_s:g} s"

    def kill(self) -> None:
        """End the workers now (the run failed or was interrupted), then leave the group."""
        self._stopping.set()
        self._spawning.join()
        if self.inbox is not None:
            self.inbox.close()
        processes = list(self.processes.values())
        for process in processes:
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(5.0)
        if self.inbox is not None:
            self.inbox.join(5.0)  # every link is closed now: no listening thread stays inside a receive
        leave_process_group()

    def close(self) -> None:
        """Stop the workers: each says BYE (it is then past its last job) and exits on its own; leave the group."""
        stop_workers(self.inbox, self.spec.timeout_s)
        leave_process_group()


@dataclass(order=True)
class _Pending:
    """A job not yet sent: taken in job-key order (the order the server will need the updates in)."""

    key: int
    client: int
    version: int = field(compare=False)
    weights: torch.Tensor = field(compare=False)


class PoolJobs:
    """Jobs trained on the pool's workers: submitted as soon as their start model is known, taken by key.

    A worker holds at most :data:`TASKS_PER_WORKER` jobs; the others wait here,
    lowest key first, for the first worker free to take them. With per-client
    state on the workers (``pinned``: SCAFFOLD's control variates, error-feedback
    residuals) a client always trains on the same worker; else on any.
    """

    def __init__(self, pool: WorkerPool, trainer: LocalTrainer, pinned: bool, with_control: bool = False) -> None:
        self.pool, self.trainer, self.with_control = pool, trainer, with_control
        self.placement = Placement(len(trainer.partitions), len(pool.processes) + 1) if pinned else None
        self.dim = sum(p.numel() for p in trainer.params)
        self._pending: dict[int | None, list[_Pending]] = {}  # by the rank that must take them (None: any)
        self._jobs: dict[tuple[int, int], tuple[Job, wire.Sending]] = {}  # sent, by (key, client)
        self._done: dict[tuple[int, int], ClientUpdate] = {}
        self._load = dict.fromkeys(pool.processes, 0)
        self._owing_since = dict.fromkeys(pool.processes, 0.0)  # since when a worker with jobs owes an answer
        self.trained = dict.fromkeys(pool.processes, 0)  # updates received from each worker

    def summary(self) -> dict[str, list[int]]:
        """For ``final``: the updates each worker trained (how evenly the clients were spread)."""
        return {"worker_updates": list(self.trained.values())}

    def submit(self, key: int, client: int, weights: torch.Tensor, version: int, where: str) -> None:
        """Train ``client`` from ``weights`` (model ``version``) under job ``key``, on a worker free to take it."""
        rank = self.placement.worker_of(client) if self.placement is not None else None
        heapq.heappush(self._pending.setdefault(rank, []), _Pending(key, client, version, weights))
        self._send_what_fits(where)

    def take(self, key: int, client: int, where: str) -> ClientUpdate:
        """The update of ``client``'s job ``key``, once it arrives (``where``: the run's position, for messages)."""
        while (key, client) not in self._done:
            self._receive(where)
        return self._done.pop((key, client))

    def _receive(self, where: str) -> None:
        event = self.pool.inbox.get(self.pool.spec.timeout_s)
        if event is None or isinstance(event, Lost):
            raise self._lost(event, where)
        job, sending = self._jobs.pop((event.job_key, event.client), (None, None))
        reason = protocol_violation(event, job, self.trainer)
        if reason is not None:
            self.pool.inbox.drop(event.source)
            raise _stopped(f"worker {event.source} broke the protocol: {reason}", where)
        sending.wait()  # answered, so long delivered: frees the task's buffers
        self._done[(job.key, job.client)] = to_client_update(
            event, self.trainer.num_samples(job.client), self.dim, self.with_control
        )
        self._load[job.rank] -= 1
        self._owing_since[job.rank] = time.monotonic()  # its next answer, if it has jobs, is owed from now
        self.trained[job.rank] += 1
        self._send_what_fits(where)

    def _send_what_fits(self, where: str) -> None:
        """Give every worker with room the lowest-key job it may take."""
        for rank in self._load:
            while self._load[rank] < TASKS_PER_WORKER:
                queues = [q for q in (self._pending.get(rank), self._pending.get(None)) if q]
                if not queues:
                    break
                job = heapq.heappop(min(queues, key=lambda q: q[0]))
                self._send(rank, job, where)

    def _send(self, rank: int, job: _Pending, where: str) -> None:
        self.pool.inbox.expect(rank, 1)
        try:
            sending = wire.send_task(rank, job.key, job.version, [job.client], job.weights)
        except Exception as exc:  # noqa: BLE001 - the link is gone
            raise self._lost(Lost(rank, loss_reason(exc)), where) from None
        self._jobs[(job.key, job.client)] = (Job(rank, job.client, job.key, job.version), sending)
        if not self._load[rank]:
            self._owing_since[rank] = time.monotonic()
        self._load[rank] += 1

    def _lost(self, event: Lost | None, where: str) -> WorkerLost:
        """The run stops: a worker is lost (``event``), or no update came within --timeout (None). A timeout closes
        every link (gloo), so the loss reported first may be any worker's: the one that has owed an answer the
        longest is named."""
        rank, reason = (event.rank, event.reason) if event is not None else (None, SILENT)
        if reason == SILENT:
            owing = [r for r, load in self._load.items() if load]
            rank = min(owing, key=self._owing_since.__getitem__, default=rank)
            reason = self.pool.silent()
        if rank is None:  # no worker owes an answer: cannot be, while an update is awaited
            return WorkerLost(f"--workers: no update for {self.pool.spec.timeout_s:g} s (--timeout) {where}")
        return _stopped(self.pool.describe(rank, reason), where)


def _stopped(what: str, where: str) -> WorkerLost:
    return WorkerLost(f"--workers: {what} {where}; the run stops (continue it with --resume from a --checkpoint)")


def pool_rounds(jobs: PoolJobs) -> RoundExecutor:
    """Synchronous rounds on the pool: every picked client's job submitted at once, the updates in ``picked`` order."""

    def execute(task: RoundTask, progress: Callable[[float], None]) -> list[ClientUpdate]:
        weights = task.weights if task.control is None else torch.cat([task.weights, task.control])
        for client in task.picked:
            jobs.submit(task.round_index, client, weights, task.round_index - 1, f"in round {task.round_index}")
        updates = []
        for client in task.picked:
            updates.append(jobs.take(task.round_index, client, f"in round {task.round_index}"))
            progress(1.0)
        return updates

    return execute


class PooledAsyncJobs:
    """Asynchronous jobs on the pool, trained ahead of the virtual clock.

    A job's start model is known once the server has processed the arrivals it
    was dispatched after; its key (its arrival index + 1) is known once the
    timeline is planned past its arrival. A planner (a copy of the loop's
    timeline: same speeds, same seeded stream) runs ahead far enough for both,
    so every job in flight trains while the server applies the arrivals in
    virtual-clock order. Jobs arriving before ``first`` (done before a resume) or
    from ``last`` on (never received) are not trained.
    """

    def __init__(self, jobs: PoolJobs, plan: Callable[[], AsyncTimeline], first: int, last: int) -> None:
        self.jobs, self.planner, self.first, self.last = jobs, plan(), first, last
        self._waiting: dict[int, list[PlannedJob]] = {}  # planned jobs to train, by the arrivals they start after

    def start(self, after: int, weights: torch.Tensor, version: int) -> None:
        """The model after ``after`` arrivals is ``weights`` (``version``): submit the jobs that start from it."""
        planner = self.planner
        while min(planner.models_in_use()) <= after:  # jobs started from models up to this one still to plan
            job = planner.next_arrival()
            if self.first <= job.index < self.last:
                self._waiting.setdefault(job.dispatched_after, []).append(job)
        for job in self._waiting.pop(after, []):
            self.jobs.submit(job.index + 1, job.client, weights, version, f"after update {after}")

    def take(self, job: PlannedJob, start: torch.Tensor, progress: Callable[[float], None]) -> ClientUpdate:
        """The update of ``job`` (trained from ``start``, the model it was submitted with)."""
        update = self.jobs.take(job.index + 1, job.client, f"at update {job.index + 1}")
        progress(1.0)
        return update
