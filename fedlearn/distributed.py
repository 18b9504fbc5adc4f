"""Runs over torch.distributed (gloo), started by torchrun: rank 0 is the server, every other rank a worker.

Workers host a share of the clients (client ``c`` lives on rank ``1 + c mod
(world - 1)``), load the data and draw the partition from the seed themselves,
so only models and updates cross the wire (:mod:`fedlearn.wire`). The server
listens to every worker on its own thread, so it takes updates in the order
they come, notices a worker whose link breaks at once, and one that goes
silent after ``--timeout`` seconds (gloo's own timeout on every receive).
"""

from __future__ import annotations

import os
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from . import wire
from .client import ClientUpdate, LocalTrainer
from .clock import ClientSpeeds
from .errors import FedlearnError, UsageError
from .training import TrainStats

SERVER = 0


class WorkerLost(FedlearnError):
    """A worker stopped answering (its link broke, or it was silent past the timeout)."""

    exit_code = 1


@dataclass(frozen=True)
class Placement:
    """Which worker rank hosts which client: round-robin over ranks 1 .. world-1."""

    num_clients: int
    world_size: int

    @property
    def workers(self) -> list[int]:
        """The worker ranks."""
        return list(range(1, self.world_size))

    def worker_of(self, client: int) -> int:
        """The rank hosting ``client``."""
        return 1 + client % (self.world_size - 1)

    def clients_of(self, rank: int) -> list[int]:
        """The clients hosted by worker ``rank``."""
        return list(range(rank - 1, self.num_clients, self.world_size - 1))


def start(timeout_s: float) -> tuple[int, int, int]:
    """Join the process group torchrun describes in the environment; returns (rank, world size, local rank)."""
    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise UsageError(
            f"--distributed: {', '.join(missing)} not set; start the script with torchrun, "
            "e.g. torchrun --standalone --nproc-per-node 3 run_federated.py --distributed"
        )
    world = int(os.environ["WORLD_SIZE"])
    if world < 2:
        raise UsageError("--distributed needs at least 2 processes (rank 0 is the server, the others host clients)")
    dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def stop() -> None:
    """Leave the process group (best effort: a lost peer must not hang the exit)."""
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - a broken link at shutdown changes nothing
            pass


def agree_on_setup(rank: int, dim: int, num_clients: int, train_labels: torch.Tensor, seed: int) -> None:
    """Every rank compares what it loaded (model size, clients, training labels, seed); a mismatch stops all."""
    labels = train_labels.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()
    mine = torch.tensor([dim, num_clients, len(labels), zlib.crc32(labels), seed], dtype=torch.int64)
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    for other_rank, theirs in enumerate(everyone):
        if not torch.equal(theirs, everyone[SERVER]):
            raise UsageError(
                f"--distributed: rank {other_rank} set up differently from the server "
                f"(model size, clients, training labels checksum, seed: {theirs.tolist()} vs "
                f"{everyone[SERVER].tolist()}); "
                "give every rank the same flags and dataset"
            )


def serve_clients(trainer: LocalTrainer, speeds: ClientSpeeds, emulate_delay: bool) -> int:
    """A worker's loop: train the clients each task names, reply with their updates, until told to stop.

    With ``emulate_delay`` a client ``k`` times slower than the fastest (``--delay``) sleeps
    ``(k - 1)`` times its real training time, plus ``--comm_delay`` seconds, before replying.
    Returns the number of jobs done.
    """
    dim = sum(p.numel() for p in trainer.params)
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
            wire.send_update(
                client, task.job_key, task.version, update.num_samples, stats.samples, stats.batches,
                stats.mean_loss, update.weights,
            )  # fmt: skip
            jobs += 1


@dataclass(frozen=True)
class Lost:
    """A worker the server gave up on (``rejected``: updates of it that were received and never applied)."""

    rank: int
    reason: str
    rejected: int = 0

    @property
    def source(self) -> int:
        """The worker it is about (like an update's ``source``)."""
        return self.rank


class Inbox:
    """The server's ears: one receiving thread per worker, one queue of updates and losses, in arrival order.

    A worker may have at most as many updates on their way as it was given jobs
    (:meth:`expect`, called before each task is sent): one more is a protocol
    violation, reported as the worker's loss, and nothing it sends is read again.
    So a flooding worker cannot grow the server's memory, and no thread ever
    waits on the server (which may itself be waiting to send that worker a task).
    """

    def __init__(self, workers: list[int], dim: int) -> None:
        self._events: queue.Queue[wire.WireUpdate | Lost] = queue.Queue()
        self._closed = threading.Event()
        self._dropped: set[int] = set()
        self._lock = threading.Lock()
        self._allowance = dict.fromkeys(workers, 0)
        self._threads = {
            rank: threading.Thread(target=self._listen, args=(rank, dim), name=f"inbox-{rank}", daemon=True)
            for rank in workers
        }
        for thread in self._threads.values():
            thread.start()

    def _listen(self, rank: int, dim: int) -> None:
        while True:
            try:
                update = wire.recv_update(rank, dim)
            except Exception as exc:  # noqa: BLE001 - a broken link, a timeout or a framing error: the worker is lost
                if rank not in self._dropped:
                    self._report(Lost(rank, _reason(exc)))
                return
            if update is None or rank in self._dropped:  # BYE (the worker stopped), or no longer listened to
                return
            with self._lock:
                self._allowance[rank] -= 1
                over = self._allowance[rank] < 0
            if over:
                self._dropped.add(rank)
                self._report(Lost(rank, "protocol violation: sent more updates than it was given jobs", rejected=1))
                return
            self._report(update)

    def _report(self, event: wire.WireUpdate | Lost) -> None:
        if not self._closed.is_set():
            self._events.put(event)

    def expect(self, rank: int, updates: int) -> None:
        """Worker ``rank`` is about to be sent jobs for ``updates`` more updates."""
        with self._lock:
            self._allowance[rank] += updates

    def get(self, timeout_s: float) -> wire.WireUpdate | Lost | None:
        """The next event, or None after ``timeout_s`` seconds of silence."""
        try:
            return self._events.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def drop(self, rank: int) -> None:
        """Stop listening to worker ``rank`` (what it sends from now on is never read)."""
        self._dropped.add(rank)

    def close(self) -> None:
        """Stop reporting (call before telling the workers to stop)."""
        self._closed.set()

    def join(self, timeout_s: float, ranks: Iterable[int] | None = None) -> bool:
        """Wait for the listening threads of ``ranks`` (default: every worker, all told to stop) to end: each
        said BYE or its link is gone, so none is inside a receive when the process group goes. True if
        they all did."""
        deadline = time.monotonic() + timeout_s
        waited = [self._threads[rank] for rank in (self._threads if ranks is None else ranks)]
        for thread in waited:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in waited)


@dataclass(frozen=True)
class Job:
    """What the server asked a worker to train: one client, under a job key, from a model version."""

    rank: int
    client: int
    key: int
    version: int


def protocol_violation(update: wire.WireUpdate, job: Job | None, trainer: LocalTrainer) -> str | None:
    """Why ``update`` cannot be taken as the answer to ``job`` (None: it can).

    It must come from the rank that was sent the job, for that client, key and
    version, and its claims must fit what the server knows of the client: its
    sample count, at most that many samples times the local epochs trained, at
    most as many batches as one local job has, and a training loss that is not negative.
    """
    if job is None or (update.source, update.client, update.job_key, update.version) != (
        job.rank, job.client, job.key, job.version
    ):  # fmt: skip
        return f"sent an update for client {update.client} (job {update.job_key}) that it was not asked for"
    samples = trainer.num_samples(job.client)
    most = samples * trainer.config.epochs
    if update.num_samples != samples:
        return f"claimed client {job.client} holds {update.num_samples} samples (it holds {samples})"
    if not 0 <= update.samples_trained <= most:
        return f"claimed {update.samples_trained} samples trained (0 to {most} possible)"
    if not 0 <= update.batches <= trainer.num_batches(job.client):
        return f"claimed {update.batches} batches (0 to {trainer.num_batches(job.client)} possible)"
    if update.mean_loss < 0:
        return f"claimed a negative training loss {update.mean_loss:g}"
    return None


def first_line(exc: BaseException) -> str:
    """An exception's message in one line (gloo's run over several), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _reason(exc: BaseException) -> str:
    text = first_line(exc)
    if "timeout" in text.lower() or "timed out" in text.lower():
        return "silent past --timeout"
    if isinstance(exc, wire.ProtocolError):
        return f"protocol error: {text}"
    return "link closed (process gone?)"


def to_client_update(update: wire.WireUpdate, num_samples: int) -> ClientUpdate:
    """A received update in the simulation's form; the sample count is the server's own, never the worker's."""
    stats = TrainStats(samples=update.samples_trained, batches=update.batches, mean_loss=update.mean_loss)
    return ClientUpdate(client=update.client, weights=update.weights, num_samples=num_samples, stats=stats)


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

    def __init__(self, placement: Placement, inbox: Inbox, trainer: LocalTrainer, timeout_s: float) -> None:
        self.placement = placement
        self.inbox = inbox
        self.trainer = trainer
        self.timeout_s = timeout_s
        self.unexpected = 0  # protocol violations (the run stops at the first)

    def __call__(
        self, picked: list[int], weights: torch.Tensor, round_index: int, progress: Callable[[float], None]
    ) -> list[ClientUpdate]:
        """The picked clients' updates of round ``round_index``, in ``picked`` order."""
        jobs = {c: Job(self.placement.worker_of(c), c, round_index, round_index - 1) for c in picked}
        self._send(jobs, weights, round_index)
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
            got[event.client] = to_client_update(event, self.trainer.num_samples(event.client))
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
                raise _stop(f"worker rank {rank} lost ({_reason(exc)})", round_index) from None

    def finish(self) -> None:
        """Tell every worker to stop."""
        self.inbox.close()
        for rank in self.placement.workers:
            try:
                wire.send_stop(rank)
            except Exception:  # noqa: BLE001 - gone already: nothing to stop
                pass
        self.inbox.join(self.timeout_s)
