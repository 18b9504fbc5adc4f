"""What a trained job sends the server, as a part the trainer is given.

Without a codec a client sends its trained weights (float32). With one
(``--compress``, :mod:`fedlearn.comm.codecs`) it sends its delta ``trained - start``
encoded; with error feedback (``--error_feedback``, Stich et al. 2018) the part
of each client's delta its encoding dropped is kept on the client and added to
its next delta, so over many jobs the sum of what was sent follows the sum of
the true deltas. Residuals persist for the clients that have trained here (like
SCAFFOLD's control variates); QSGD's random rounding draws from a stream keyed
by (seed, job key, client), so a job's payload depends on nothing else. A job whose delta is not finite (it
diverged) clears its client's residual instead of carrying NaN into every later job.
"""

from __future__ import annotations

from typing import Any

import torch

from ..comm.codecs import Codec, error_feedback_problem
from ..core import seeding
from ..core.client_state import from_per_client, per_client
from ..errors import UsageError

STATE_KEY = "client_residuals"


class Uplink:
    """Turns a job's trained weights into what the server receives (weights, or an encoded delta)."""

    def __init__(self, codec: Codec | None = None, error_feedback: bool = False, seed: int = 0) -> None:
        problem = error_feedback_problem(codec.name if codec is not None else "none", error_feedback)
        if problem is not None:  # the rule the flags are checked by, for parts built from Python too
            raise UsageError(problem)
        self.codec, self.error_feedback, self.seed = codec, error_feedback, seed
        self.residuals: dict[int, torch.Tensor] = {}

    def send(self, client: int, job_key: int, start: torch.Tensor, trained: torch.Tensor) -> torch.Tensor:
        """The payload of ``client``'s job ``job_key``, which trained ``start`` into ``trained``."""
        if self.codec is None:
            return trained
        delta = (trained - start.to(trained)).float().cpu()
        if self.error_feedback and client in self.residuals:
            delta = delta + self.residuals[client]
        payload = self.codec.encode(delta, seeding.torch_generator(self.seed, seeding.COMPRESSION, job_key, client))
        if self.error_feedback:
            if bool(torch.isfinite(delta).all()):
                self.residuals[client] = delta - self.codec.decode(payload, delta.numel())
            else:  # a diverged job: its update is rejected by the server; carrying NaN on would lock the client out
                self.residuals.pop(client, None)
        return payload

    @property
    def state_key(self) -> str | None:
        """Where a checkpoint holds the residuals (None without error feedback)."""
        return STATE_KEY if self.error_feedback else None

    def state(self) -> dict[str, Any]:
        """The clients' residuals, for a checkpoint (nothing without error feedback)."""
        return {STATE_KEY: per_client(self.residuals)} if self.error_feedback else {}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        saved = state.get(STATE_KEY)
        if saved is not None:
            self.residuals = from_per_client(saved)
