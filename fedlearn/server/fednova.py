"""FedNova (Wang et al. 2020, "Tackling the Objective Inconsistency Problem in Heterogeneous Federated
Optimization"): normalized averaging, a server part that runs before the checks and the rule.

Client ``i`` takes ``tau_i`` local steps (``--local_epoch`` passes over its own
samples in batches: clients with more samples take more). Its change
``y_i - x`` sums its gradients weighted by ``a_i``: all ones for plain SGD, and
``a_{i,j} = (1 - rho^(tau_i - j)) / (1 - rho)`` for SGD with momentum ``rho``.
FedAvg's weighted mean of the changes then over-weights the clients that took
more steps; FedNova divides each change by ``||a_i||_1`` and rescales by
``tau_eff = sum_i p_i ||a_i||_1`` (``p_i``: sample-count weights):
``x <- x + tau_eff sum_i p_i (y_i - x) / ||a_i||_1``. As points for the rule
that is ``x + (tau_eff / ||a_i||_1) (y_i - x)``, combined with the weights ``p_i``.
The server counts the steps itself (from the client's sample count, the
batch size and the local epochs, fewer for a round's stragglers): a worker is trusted for nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from .checks import rejection_reason
from .pipeline import Batch


def momentum_norm(steps: int, momentum: float) -> float:
    """``||a||_1`` of ``steps`` SGD steps with heavy-ball ``momentum`` (``steps`` when there is none)."""
    if momentum == 0.0:
        return float(steps)
    return (steps - momentum * (1 - momentum**steps) / (1 - momentum)) / (1 - momentum)


def normalized_rows(
    origin: torch.Tensor, rows: Sequence[torch.Tensor], counts: Sequence[float], norms: Sequence[float]
) -> list[torch.Tensor]:
    """FedNova's points ``x + (tau_eff / ||a_i||_1)(y_i - x)``; the rows themselves when every client took the
    same steps (every factor is then 1: FedAvg, bit for bit, with no rounding of ``tau_eff`` in the way). A row
    of the wrong shape or dtype is left as it is, for the checks to reject."""
    if len(set(norms)) == 1:
        return list(rows)
    total = float(sum(counts))
    tau_eff = sum(n * a for n, a in zip(counts, norms)) / total
    factors = [tau_eff / a for a in norms]
    fits = [rejection_reason(row, origin.numel(), origin.dtype, check_values=False) is None for row in rows]
    return [origin + f * (row - origin) if ok else row for row, f, ok in zip(rows, factors, fits)]


@dataclass(frozen=True)
class FedNova:
    """The normalizing part: ``local_steps(client, round)`` is the optimizer steps of a client's job in a round."""

    local_steps: Callable[[int, int], int]
    momentum: float = 0.0

    def __call__(self, batch: Batch, key: int) -> Batch:
        """Round ``key``'s batch with FedNova's points in place of the clients' weights."""
        if batch.origin is None:
            raise ValueError("FedNova normalizes points trained from a known origin (synchronous rounds)")
        norms = [momentum_norm(self.local_steps(c, key), self.momentum) for c in batch.clients]
        return replace(batch, rows=normalized_rows(batch.origin, batch.rows, batch.counts, norms))
