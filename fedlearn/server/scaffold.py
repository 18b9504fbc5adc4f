"""SCAFFOLD's server side (Karimireddy et al. 2020): the server control variate ``c``.

Each round the picked clients train with the correction ``c - c_i``
(:class:`fedlearn.client.objectives.Scaffold`) and return their weights and
``delta c_i``; the model goes through the server pipeline like any FedAvg round,
and ``c <- c + (1/N) sum_{i in S} delta c_i`` (``N``: all clients), i.e.
``(|S|/N)`` times the mean change. A ``delta c_i`` that fails the checks (shape,
dtype, finite), or whose client's weights do, is not applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .checks import rejection_reason


class ServerControl:
    """The server control variate ``c`` (zero at first) and the clients whose ``c_i`` it has heard of."""

    def __init__(self, dim: int, num_clients: int, dtype: torch.dtype = torch.float32) -> None:
        self.c = torch.zeros(dim, dtype=dtype)
        self.num_clients = num_clients
        self.seen: set[int] = set()

    def update(
        self, clients: Sequence[int], rows: Sequence[torch.Tensor], deltas: Sequence[torch.Tensor | None]
    ) -> None:
        """Add ``(1/N) sum delta c_i`` over the clients whose weights and ``delta c_i`` pass the checks."""
        dim, dtype = self.c.numel(), self.c.dtype
        good = [(client, delta) for client, row, delta in zip(clients, rows, deltas)
                if delta is not None and rejection_reason(delta, dim, dtype) is None
                and rejection_reason(row, dim, dtype) is None]  # fmt: skip
        if good:
            self.c = self.c + torch.stack([d.to(self.c.device) for _, d in good]).sum(dim=0) / self.num_clients
            self.seen.update(client for client, _ in good)

    def state(self) -> dict[str, Any]:
        """``c`` and the clients seen, for a checkpoint."""
        return {"control": self.c.detach().cpu(), "control_clients": sorted(self.seen)}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        self.c = state["control"].to(self.c.device, self.c.dtype)
        self.seen = set(state["control_clients"])

    def summary(self) -> dict[str, Any]:
        """How many clients hold a control variate, and its memory (float32, wherever those clients train)."""
        return {"clients_with_control_variates": len(self.seen),
                "client_control_variates_mib": len(self.seen) * self.c.numel() * 4 / 2**20}  # fmt: skip
