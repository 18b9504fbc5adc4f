"""How the pool's workers get their clients: the factory pickled once, and the file descriptors of the shared memory
it closes over sent down each worker's own pipe.

Pickled the usual way, a shared tensor's descriptor is served by multiprocessing's resource sharer: a thread of the
server that the worker connects to, once per tensor, and that prints a traceback when the worker dies while
connected (killed while starting). Here the server sends the descriptors itself, :data:`BATCH` at a time, and waits
for the worker to take each batch before the next: no more are ever in flight.
"""

from __future__ import annotations

import pickle
import socket
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import reduction
from multiprocessing.connection import Connection
from multiprocessing.context import set_spawning_popen
from typing import Any

BATCH = 250  # descriptors per message (Linux passes at most 253)

_received: list[int] = []  # in a worker: the descriptors the server sent


class _Received:
    """In a worker: the ``index``-th descriptor the server sent."""

    def __init__(self, index: int) -> None:
        self.index = index

    def detach(self) -> int:
        """The descriptor (unpickling a shared tensor maps it, then closes it)."""
        return _received[self.index]


class _Collector:
    """Stands in for a process being spawned while the orders are pickled: keeps the descriptors to send."""

    DupFd = _Received

    def __init__(self) -> None:
        self.fds: list[int] = []

    def duplicate_for_child(self, fd: int) -> int:
        """Send ``fd`` with the orders; its index among them."""
        self.fds.append(fd)
        return len(self.fds) - 1


@dataclass(frozen=True)
class Orders:
    """What every worker is handed: an object pickled (its tensors in shared memory) and the descriptors they need."""

    pickled: bytes
    fds: list[int]

    @classmethod
    def of(cls, obj: object) -> Orders:
        """``obj``'s orders (its tensors are moved to shared memory, as pickling for another process does)."""
        collector = _Collector()
        set_spawning_popen(collector)
        try:
            return cls(bytes(reduction.ForkingPickler.dumps(obj)), collector.fds)
        finally:
            set_spawning_popen(None)

    def send(self, link: Connection, wait: Callable[[Connection], None]) -> None:
        """Hand them to the worker at the other end of ``link``, ``wait(link)`` for it to answer each batch of
        descriptors (it raises if the worker does not); OSError or EOFError if the worker is gone."""
        link.send((len(self.fds), self.pickled))
        for start in range(0, len(self.fds), BATCH):
            with socket.fromfd(link.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                reduction.sendfds(sock, self.fds[start : start + BATCH])
            wait(link)
            link.recv_bytes()  # the batch taken


def take(link: Connection) -> Any:
    """In a worker: the object that :meth:`Orders.send` sends down ``link``."""
    count, pickled = link.recv()
    _received.clear()
    while len(_received) < count:
        with socket.fromfd(link.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            _received.extend(reduction.recvfds(sock, min(BATCH, count - len(_received))))
        link.send_bytes(b"")
    return pickle.loads(pickled)
