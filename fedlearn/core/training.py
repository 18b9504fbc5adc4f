"""Minibatch training and evaluation over in-memory tensors."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..data.windows import Windows, take
from ..registry import Entry, Flag, Registry

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""A batch ``(B, C, H, W)`` and the job's generator -> the augmented batch, same shape and layout
(:mod:`fedlearn.data.augment`)."""

EVAL_BATCH_SIZE = 500  # larger batches are slower on CPU (cache); measured with fedlearn.bench

SGD_MOMENTUM = 0.9


def _optimizer(name: str, factory: Callable[..., torch.optim.Optimizer], info: float | None = None,
               **settings: float) -> Entry:  # fmt: skip
    """An optimizer entry built by ``factory(params, lr=lr, **settings)``; ``info``: its heavy-ball momentum, for
    the SGD family (None for the others)."""
    return Entry(name, lambda params, lr: factory(params, lr=lr, **settings), info=info)


OPTIMIZERS = Registry.of(
    "optimizers",
    Flag("optimizer", "adam", str, help="fresh state for every local job"),
    [
        _optimizer("adam", torch.optim.Adam),
        _optimizer("adamw", torch.optim.AdamW),
        _optimizer("sgd", torch.optim.SGD, info=0.0),
        _optimizer("sgd-momentum", torch.optim.SGD, info=SGD_MOMENTUM, momentum=SGD_MOMENTUM),
    ],
)
"""Every local optimizer by name (``--optimizer``); an entry's ``info`` is the SGD family's heavy-ball momentum
(SCAFFOLD and FedNova are defined for those only), None for the others."""


def momentum_of(name: str) -> float | None:
    """The heavy-ball momentum of optimizer ``name`` (None: not of the SGD family)."""
    return OPTIMIZERS[name].info


def make_optimizer(name: str, params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """A fresh optimizer (no state carried over) chosen by ``--optimizer``."""
    return OPTIMIZERS[name].part(params, lr)


@dataclass(frozen=True)
class TrainStats:
    """What one call of :func:`train` did."""

    samples: int  # samples processed, counting every epoch
    batches: int
    mean_loss: float  # sample-weighted mean training loss over all batches


def count_batches(num_samples: int, batch_size: int, epochs: int = 1) -> int:
    """Optimizer steps for ``epochs`` passes over ``num_samples`` (last batch may be short)."""
    return epochs * -(-num_samples // batch_size)


@dataclass(frozen=True)
class Passes:
    """Shuffled minibatch passes over ``x[indices]``: how many, how large the batches, whose shuffles."""

    indices: torch.Tensor
    epochs: int
    batch_size: int
    generator: torch.Generator  # CPU; fixes the shuffles (and the augmentation's draws)
    augment: Augment | None = None  # applied to every training batch


class StepHooks(Protocol):
    """A local objective's hooks around every optimizer step, each given the model's parameters."""

    def adjust_gradients(self, params: list[nn.Parameter]) -> None:
        """After the backward pass, before the step (FedProx's term)."""

    def after_step(self, params: list[nn.Parameter]) -> None:
        """After the step (SCAFFOLD's correction, outside any momentum)."""


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    passes: Passes,
    on_batch: Callable[[], None] | None = None,
    hooks: StepHooks | None = None,
) -> TrainStats:
    """Run ``passes`` of minibatch cross-entropy training over ``x[passes.indices]``.

    Batches are gathered by tensor indexing (and augmented, if ``passes`` says so). ``on_batch`` is called after every
    optimizer step (progress reporting). ``hooks`` (a local objective,
    :mod:`fedlearn.client.objectives`) may change the gradients before each step
    and the weights after it; the reported loss is the cross-entropy alone.
    """
    if not model.training:  # (evaluation switches it off; walking the modules every job costs 15 us)
        model.train()
    params = list(model.parameters()) if hooks is not None else []
    indices, batch_size = passes.indices, passes.batch_size
    n = int(indices.numel())
    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    batches = 0
    for _ in range(passes.epochs):
        order = indices[torch.randperm(n, generator=passes.generator).to(indices.device)]
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            inputs = x[batch] if passes.augment is None else passes.augment(x[batch], passes.generator)
            loss = F.cross_entropy(model(inputs), y[batch])
            loss.backward()
            if hooks is not None:
                hooks.adjust_gradients(params)
            optimizer.step()
            if hooks is not None:
                hooks.after_step(params)
            total_loss += loss.detach() * batch.numel()
            batches += 1
            if on_batch is not None:
                on_batch()
    samples = n * passes.epochs
    return TrainStats(samples=samples, batches=batches, mean_loss=float(total_loss) / max(samples, 1))


@dataclass(frozen=True)
class EvalResult:
    """Accuracy (correct / samples, in [0, 1]) and mean cross-entropy on a labelled set; ``hits``: whether each
    sample was classified right, when asked for."""

    accuracy: float
    loss: float
    hits: torch.Tensor | None = field(default=None, compare=False)


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE, keep_hits: bool = False
) -> EvalResult:
    """Accuracy and mean loss of ``model`` on ``(x, y)``, in large batches without autograd (``keep_hits``: with
    each sample's hit, for the clients' accuracies when their test sets are this one)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=y.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=y.device)
    hits = torch.empty(y.shape[0], dtype=torch.bool, device=y.device) if keep_hits else None
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            loss_sum += F.cross_entropy(logits, target, reduction="sum")
            hit = logits.argmax(dim=1) == target
            correct += hit.sum()
            if hits is not None:
                hits[start : start + batch_size] = hit
    n = x.shape[0]
    return EvalResult(accuracy=int(correct) / n, loss=float(loss_sum) / n, hits=hits)


CLIENT_TESTS_FACT = "client test sets fingerprint"
"""The run fact (JSON ``run``) holding :meth:`ClientTests.fingerprint`."""


@dataclass(frozen=True)
class ClientTests:
    """Every client's held-out test samples, stacked: images, labels, and the client each belongs to."""

    x: torch.Tensor
    y: torch.Tensor
    owner: torch.Tensor  # int64, one client index per sample
    num_clients: int
    covers_test_set: bool = False  # the samples are the test set's, in its order (one evaluation serves both)

    @classmethod
    def gather(cls, x: torch.Tensor, y: torch.Tensor, held_out: list[torch.Tensor]) -> ClientTests:
        """Stack the samples ``held_out[k]`` of every client ``k`` (indices into ``x``, ``y``)."""
        index = torch.cat(held_out).to(x.device)
        sizes = torch.tensor([len(h) for h in held_out], device=x.device)
        owner = torch.repeat_interleave(torch.arange(len(held_out), device=x.device), sizes)
        return cls(take(x, index), y[index], owner, len(held_out))

    @classmethod
    def by_id(cls, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, clients: torch.Tensor) -> ClientTests:
        """The test samples of each client: sample ``i`` belongs to the client whose id ``clients[k]`` (ascending)
        equals ``ids[i]``; samples of an id no client has are left out."""
        clients = clients.to(ids.device)
        where = torch.searchsorted(clients, ids).clamp(max=len(clients) - 1)
        known = clients[where] == ids
        index = torch.nonzero(known).squeeze(1)
        owner = where[known].to(y.device)
        return cls(take(x, index), y[index.to(y.device)], owner, len(clients), covers_test_set=bool(known.all()))

    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of every client's test samples and labels: runs with equal fingerprints judge
        the same clients on the same samples, whatever their memory layout."""
        digest = hashlib.sha256()
        x = (self.x.text, self.x.starts) if isinstance(self.x, Windows) else (self.x,)
        for tensor in (self.owner, self.y, *x):
            digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def accuracies(self, model: nn.Module, batch_size: int = EVAL_BATCH_SIZE) -> list[float | None]:
        """Each client's accuracy on its own test set (None for a client without one), in one pass over all."""
        return self.accuracies_from(evaluate(model, self.x, self.y, batch_size, keep_hits=True).hits)

    def accuracies_from(self, hits: torch.Tensor) -> list[float | None]:
        """Each client's accuracy from every sample's hit (None for a client without a test sample)."""
        correct = torch.bincount(self.owner, weights=hits.to(torch.float64), minlength=self.num_clients).tolist()
        sizes = torch.bincount(self.owner, minlength=self.num_clients).tolist()
        return [h / n if n else None for h, n in zip(correct, sizes)]
