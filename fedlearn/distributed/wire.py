"""What travels between the server (rank 0) and the workers: tensors only, never pickled objects.

A task (server -> worker) is three messages: an int64 header
``[kind, job_key, version, num_clients, numel]``, an int64 tensor of client ids,
and the float32 flat model. ``kind`` STOP ends the worker (nothing follows).

An update (worker -> server) is three messages: an int64 header
``[client, job_key, version, num_samples, samples_trained, batches, numel, dtype]``,
a float64 ``[mean training loss]`` and the payload (``numel`` values of
``dtype``: the flat weights, or with ``--compress`` the encoded delta as bytes).
A worker answers STOP with a lone header whose client is BYE (-1),
so the server's receive on that link ends cleanly. The receiver sizes its buffers from the header, within bounds it
checks first; what the values are (shape, dtype, finite) is checked by the
server's :mod:`fedlearn.server.checks` before use.

Messages of one kind carry their own tag, so a task and an update on the same
link never match each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

TASK_TAG, UPDATE_TAG = 1, 2
TRAIN, STOP = 1, 0
BYE = -1
TASK_HEADER = 5
UPDATE_HEADER = 8
# dtype codes a worker may declare for its weights; anything else is a protocol error
DTYPES = {0: torch.float32, 1: torch.float64, 2: torch.float16, 3: torch.bfloat16, 4: torch.uint8}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}
MAX_CLIENTS_PER_TASK = 1_000_000


class ProtocolError(RuntimeError):
    """A peer sent something that cannot be framed (its link can no longer be trusted)."""


@dataclass(frozen=True)
class Task:
    """Train ``clients`` from ``weights`` (model ``version``); ``job_key`` seeds their shuffles."""

    kind: int
    job_key: int
    version: int
    clients: tuple[int, ...]
    weights: torch.Tensor | None


@dataclass(frozen=True)
class WireUpdate:
    """One client's update as framed on the wire (received: before any check of its values; ``source`` is the
    sender's rank, taken from the link, never from the frame)."""

    source: int
    client: int
    job_key: int
    version: int
    num_samples: int
    samples_trained: int
    batches: int
    mean_loss: float
    payload: torch.Tensor  # the weights, or an encoded delta (uint8)


def send_task(dst: int, job_key: int, version: int, clients: list[int], weights: torch.Tensor) -> Sending:
    """Ask worker ``dst`` to train ``clients`` from ``weights``, without waiting for it to take the task
    (a worker that does not read cannot stall the server); :meth:`Sending.wait` waits."""
    flat = weights.detach().to("cpu", torch.float32).contiguous()
    header = torch.tensor([TRAIN, job_key, version, len(clients), flat.numel()], dtype=torch.int64)
    messages = (header, torch.tensor(clients, dtype=torch.int64), flat)
    return Sending([dist.isend(message, dst, tag=TASK_TAG) for message in messages], messages)


@dataclass(frozen=True)
class Sending:
    """A task on its way: the pending sends, and the tensors they read (kept alive until they are done)."""

    works: list[dist.Work]
    tensors: tuple[torch.Tensor, ...]

    def wait(self) -> None:
        """Block until the worker has taken the task (raises if its link broke or stayed silent)."""
        for work in self.works:
            work.wait()


def send_stop(dst: int) -> None:
    """Tell worker ``dst`` that the run is over."""
    dist.send(torch.tensor([STOP, 0, 0, 0, 0], dtype=torch.int64), dst, tag=TASK_TAG)


def send_bye(dst: int = 0) -> None:
    """A worker's last message: it has stopped."""
    dist.send(torch.tensor([BYE, 0, 0, 0, 0, 0, 0, 0], dtype=torch.int64), dst, tag=UPDATE_TAG)


def recv_task(dim: int, src: int = 0) -> Task:
    """The next task from the server (blocks up to the process group's timeout)."""
    header = torch.empty(TASK_HEADER, dtype=torch.int64)
    dist.recv(header, src, tag=TASK_TAG)
    kind, job_key, version, count, numel = (int(v) for v in header)
    if kind == STOP:
        return Task(STOP, 0, 0, (), None)
    if kind != TRAIN or not 0 < count <= MAX_CLIENTS_PER_TASK or numel != dim:
        raise ProtocolError(f"malformed task header {header.tolist()} (model size {dim})")
    clients = torch.empty(count, dtype=torch.int64)
    dist.recv(clients, src, tag=TASK_TAG)
    weights = torch.empty(numel, dtype=torch.float32)
    dist.recv(weights, src, tag=TASK_TAG)
    return Task(TRAIN, job_key, version, tuple(int(c) for c in clients), weights)


def send_update(update: WireUpdate, dst: int = 0) -> None:
    """Send one client's trained weights, with the job they answer and what training them took, to ``dst``."""
    flat = update.payload.detach().to("cpu").contiguous()
    fields = [update.client, update.job_key, update.version, update.num_samples, update.samples_trained,
              update.batches, flat.numel(), DTYPE_CODES[flat.dtype]]  # fmt: skip
    dist.send(torch.tensor(fields, dtype=torch.int64), dst, tag=UPDATE_TAG)
    dist.send(torch.tensor([update.mean_loss], dtype=torch.float64), dst, tag=UPDATE_TAG)
    dist.send(flat, dst, tag=UPDATE_TAG)


def recv_update(src: int, dim: int) -> WireUpdate | None:
    """The next update from worker ``src`` (None: it said BYE); the payload may be up to twice the model's
    size, or 8 bytes per weight encoded (``uint8``: then the codec decodes it, or rejects it); a larger or
    negative size, or an unknown dtype, is a :class:`ProtocolError`."""
    header = torch.empty(UPDATE_HEADER, dtype=torch.int64)
    dist.recv(header, src, tag=UPDATE_TAG)
    client, job_key, version, num_samples, samples, batches, numel, code = (int(v) for v in header)
    if client == BYE:
        return None
    if code not in DTYPES or not 0 <= numel <= (8 * dim + 8 if DTYPES[code] == torch.uint8 else 2 * dim):
        raise ProtocolError(f"rank {src} sent an update that cannot be framed: header {header.tolist()}")
    loss = torch.empty(1, dtype=torch.float64)
    dist.recv(loss, src, tag=UPDATE_TAG)
    weights = torch.empty(numel, dtype=DTYPES[code])
    dist.recv(weights, src, tag=UPDATE_TAG)
    return WireUpdate(src, client, job_key, version, num_samples, samples, batches, float(loss), weights)
