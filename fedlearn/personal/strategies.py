"""The personalization strategies (``--personalize``): what a client keeps of its own, what it sends, and how its
personalized model is evaluated.

- ``finetune``: every evaluation, each client fine-tunes the current global model for ``--finetune_epochs`` on its
  own training part (a fresh optimizer, a stream keyed by the evaluation) and is evaluated with the result; the
  global model is left as it is. Clients keep nothing.
- ``fedper`` (Arivazhagan et al. 2019): the personal layers (``--personal_layers``) never leave the client. A job
  trains the global body with the client's own head; the client keeps its head and sends the body; the server
  keeps its own head entries (a part before the checks), and bytes count the body alone. A client that has not
  trained yet uses the global head.
- ``ditto`` (Li et al., ICML 2021): besides its normal job, each picked client trains its personal model ``v_k``
  for as many epochs with a proximal pull ``lambda/2 ||v_k - w||^2`` toward the global weights ``w`` it received
  (``--ditto_lambda``); ``v_k`` starts as the initial model and never leaves the client.

Personal state lives with the clients (the local trainer): dictionaries of float32 vectors by client, created on a
client's first job, in checkpoints under ``personal``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from ..client.objectives import Job, Proximal
from ..core import seeding
from ..core.client_state import from_per_client, per_client
from ..core.training import ClientTests, TrainStats
from ..server.checks import rejection_reason
from ..server.pipeline import Batch
from .evaluation import accuracies_with

if TYPE_CHECKING:
    from ..client.trainer import LocalTrainer


class Personal:
    """No personalization: the client trains and sends the global model's weights, keeps nothing."""

    withheld = 0  # entries of the weights a client never sends (and is never sent)
    keeps_state = False
    state_key = "personal"  # where a checkpoint holds what the clients keep

    def start(self, client: int, weights: torch.Tensor) -> torch.Tensor:
        """The weights ``client``'s job trains from, given the global ``weights``."""
        return weights

    def finish(
        self, trainer: LocalTrainer, client: int, job_key: int, received: torch.Tensor, trained: torch.Tensor,
        stats: TrainStats,
    ) -> tuple[torch.Tensor, TrainStats]:  # fmt: skip
        """What the client sends after its job (and the job's figures, its personal work included)."""
        return trained, stats

    def accuracies(self, trainer: LocalTrainer, tests: ClientTests, weights: torch.Tensor, step: int) -> list:
        """Each client's personalized accuracy on its own test set, the global model being ``weights``."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """What clients keep, for a checkpoint."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""


@dataclass
class FineTune(Personal):
    """Fine-tuning the global model on each client's data before its evaluation."""

    epochs: int

    def accuracies(self, trainer: LocalTrainer, tests: ClientTests, weights: torch.Tensor, step: int) -> list:
        """Each client's accuracy after fine-tuning ``weights`` (the stream keyed by the evaluation's step)."""

        def tuned(client: int) -> torch.Tensor:
            return trainer.fit(client, weights, self.epochs, (seeding.FINETUNE, step, client))[0]

        return accuracies_with(trainer.model, trainer.params, tests, weights, tuned)


@dataclass
class Kept(Personal):
    """A personalization whose clients keep one vector each (FedPer's heads, Ditto's models)."""

    kept: dict[int, torch.Tensor] = field(default_factory=dict)
    keeps_state = True

    def state(self) -> dict[str, Any]:
        """Every client's vector, for a checkpoint."""
        return {self.state_key: per_client(self.kept)}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        if self.state_key in state:
            self.kept = from_per_client(state[self.state_key])


@dataclass
class FedPer(Kept):
    """Personal layers: ``index`` holds the entries of the flat weights that are the client's own."""

    index: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))

    @property
    def withheld(self) -> int:  # type: ignore[override]
        """The personal entries: never sent, either way."""
        return int(self.index.numel())

    def start(self, client: int, weights: torch.Tensor) -> torch.Tensor:
        """The global body with the client's own head (the global head before its first job)."""
        head = self.kept.get(client)
        if head is None:
            return weights
        own = weights.clone()
        own[self.index] = head.to(own)
        return own

    def finish(
        self, trainer: LocalTrainer, client: int, job_key: int, received: torch.Tensor, trained: torch.Tensor,
        stats: TrainStats,
    ) -> tuple[torch.Tensor, TrainStats]:  # fmt: skip
        """Keep the trained head; send the body (the head entries left as received: nothing of the client's)."""
        self.kept[client] = trained[self.index].float().cpu().clone()
        sent = trained.clone()
        sent[self.index] = received[self.index].to(sent)
        return sent, stats

    def accuracies(self, trainer: LocalTrainer, tests: ClientTests, weights: torch.Tensor, step: int) -> list:
        """Each client with the current body and its own head."""
        return accuracies_with(trainer.model, trainer.params, tests, weights, lambda c: self._own(c, weights))

    def _own(self, client: int, weights: torch.Tensor) -> torch.Tensor | None:
        return None if client not in self.kept else self.start(client, weights)

    def server_part(self, batch: Batch, key: int) -> Batch:
        """The server's side: every update's personal entries replaced by the model's own (a row of the wrong
        shape is left for the checks to reject)."""
        origin = batch.origin
        if origin is None:
            raise ValueError("FedPer's server part needs the weights the round started from")
        rows = []
        for row in batch.rows:
            if rejection_reason(row, origin.numel(), origin.dtype, check_values=False) is None:
                row = row.clone()
                row[self.index] = origin[self.index]
            rows.append(row)
        return replace(batch, rows=rows)


@dataclass
class Ditto(Kept):
    """Ditto's personal models, pulled toward the global weights with strength ``lam``; ``initial``: the model
    every personal model starts from."""

    lam: float = 1.0
    initial: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    def finish(
        self, trainer: LocalTrainer, client: int, job_key: int, received: torch.Tensor, trained: torch.Tensor,
        stats: TrainStats,
    ) -> tuple[torch.Tensor, TrainStats]:  # fmt: skip
        """Train the client's personal model as many epochs as its job, from where it was, pulled toward
        ``received``; the job's figures count that work too."""
        pull = None
        if self.lam > 0:
            pull = Proximal(self.lam)
            pull.start(trainer.model, Job(client, received))
        start = self.kept.get(client, self.initial)
        key = (seeding.PERSONAL, job_key, client)
        personal, own = trainer.fit(client, start.to(received), trainer.epochs(client, job_key), key, pull)
        self.kept[client] = personal.float().cpu().clone()
        return trained, TrainStats(stats.samples + own.samples, stats.batches + own.batches, stats.mean_loss)

    def accuracies(self, trainer: LocalTrainer, tests: ClientTests, weights: torch.Tensor, step: int) -> list:
        """Each client with its personal model (the initial model before its first job)."""
        return accuracies_with(trainer.model, trainer.params, tests, self.initial.to(weights), self.kept.get)
