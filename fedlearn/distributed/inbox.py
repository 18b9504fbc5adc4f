"""The server's ears: what a worker may send, and the threads that listen to each worker."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ..client import ClientUpdate, LocalTrainer
from ..core.training import TrainStats
from . import wire
from .cluster import Placement, first_line

SILENT = "silent past --timeout"  # a loss's reason when a wait timed out (gloo then closes every link)


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
                    self._report(Lost(rank, loss_reason(exc)))
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

    def listened_to(self) -> list[int]:
        """The workers not dropped (their threads end when they say BYE)."""
        return [rank for rank in self._threads if rank not in self._dropped]

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


def stop_workers(inbox: Inbox, timeout_s: float, ranks: list[int] | None = None) -> None:
    """Tell workers ``ranks`` (default: every one still listened to) to stop and wait (up to ``timeout_s``) for their
    BYE; a dropped one is left alone (it may be blocked sending what is never read: a stop would wait for it until
    the timeout)."""
    inbox.close()
    listened = inbox.listened_to() if ranks is None else ranks
    for rank in listened:
        try:
            wire.send_stop(rank)
        except Exception:  # noqa: BLE001 - gone already: nothing to stop
            pass
    inbox.join(timeout_s, listened)


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


def loss_reason(exc: BaseException) -> str:
    """Why a worker's link failed, in a few words."""
    text = first_line(exc)
    if "timeout" in text.lower() or "timed out" in text.lower():
        return SILENT
    if isinstance(exc, wire.ProtocolError):
        return f"protocol error: {text}"
    return "link closed (process gone?)"


def to_client_update(
    update: wire.WireUpdate, num_samples: int, dim: int = 0, with_control: bool = False
) -> ClientUpdate:
    """A received update in the simulation's form; the sample count is the server's own, never the worker's.
    ``with_control`` (SCAFFOLD): the payload is ``dim`` weights, then ``delta c_i``; a payload of another size
    is kept whole as the weights, for the checks to reject, with no ``delta c_i``."""
    stats = TrainStats(samples=update.samples_trained, batches=update.batches, mean_loss=update.mean_loss)
    weights, delta = update.payload, None
    if with_control and weights.numel() == 2 * dim:
        weights, delta = weights[:dim], weights[dim:]
    return ClientUpdate(update.client, weights, num_samples, stats, control_delta=delta)


@dataclass(frozen=True)
class Links:
    """The server's side of the workers: who hosts which clients, their updates as they come, how long to wait."""

    placement: Placement
    inbox: Inbox
    timeout_s: float
