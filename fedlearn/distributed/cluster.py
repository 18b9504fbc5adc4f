"""Joining and leaving the process group, checking every rank set up alike, and which rank hosts which client."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import FedlearnError, UsageError

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


def join_process_group(timeout_s: float) -> tuple[int, int, int]:
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


def leave_process_group() -> None:
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


def first_line(exc: BaseException) -> str:
    """An exception's message in one line (gloo's run over several), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
