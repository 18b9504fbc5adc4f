"""A client's local job: start from the global weights, train on its own data, send weights back."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..comm.codecs import withheld_layers_problem
from ..core import seeding
from ..core.flat import flat_parameters, get_flat, set_flat
from ..core.training import Passes, StepHooks, TrainStats, count_batches, make_optimizer, train
from ..data import Dataset
from ..data.augment import build_augment
from ..errors import UsageError
from ..server.attacks import flip_labels
from .algorithms import LOCAL_ALGORITHMS, compressed_control_problem
from .objectives import Job, acts_on_steps
from .stragglers import RoundStragglers
from .uplink import Uplink


class Personal(Protocol):
    """What a personalization (:mod:`fedlearn.personal`) does in a client's job: the weights it starts from,
    what it sends and keeps after it; ``withheld`` entries it never sends; what it keeps, for checkpoints."""

    withheld: int
    keeps_state: bool
    state_key: str

    def start(self, client: int, weights: torch.Tensor) -> torch.Tensor: ...

    def finish(
        self, trainer: Any, client: int, job_key: int, received: torch.Tensor, trained: torch.Tensor,
        stats: TrainStats,
    ) -> tuple[torch.Tensor, TrainStats]: ...  # fmt: skip

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class LocalJobConfig:
    """How every local job trains."""

    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    seed: int
    prox_mu: float = 0.0  # FedProx; 0 = plain local training
    drift_correction: str = "none"  # the local algorithm (fedlearn.client.algorithms): none, scaffold, fednova
    augment: str = "none"  # --augment, on every training batch
    flags: Mapping[str, Any] = field(default_factory=dict)  # every flag's value: a plug-in part reads its own here


@dataclass(frozen=True)
class ClientUpdate:
    """What a client returns to the server: ``payload`` is its trained weights, or with ``--compress`` its
    encoded delta (``uint8``)."""

    client: int
    payload: torch.Tensor
    num_samples: int
    stats: TrainStats
    control_delta: torch.Tensor | None = None  # SCAFFOLD's c_i+ - c_i
    withheld: int = 0  # entries of the payload the client never sends (FedPer's personal layers: the server's own)

    @property
    def upload_bytes(self) -> int:
        """Bytes the client sent: the payload (less its withheld entries), and SCAFFOLD's ``delta c_i``."""
        sent = [self.payload] + ([] if self.control_delta is None else [self.control_delta])
        return sum(t.numel() * t.element_size() for t in sent) - self.withheld * self.payload.element_size()


class LocalTrainer:
    """Runs clients' local jobs one at a time on a single reused model.

    A job depends only on (global weights, the client's data, seed, job key,
    client id): a fresh optimizer per job, and shuffles drawn from a stream
    keyed by ``(seed, job_key, client)`` (augmentation's draws too). Clients in ``label_flip`` (Byzantine,
    ``--attack labelflip``) train on flipped labels ``y -> C - 1 - y``. The local
    objective is a part (:mod:`fedlearn.client.objectives`: plain or FedProx) built once
    from the job configuration; what the client sends back is another
    (:mod:`fedlearn.client.uplink`: its trained weights, or its delta encoded by ``--compress``). With
    ``stragglers`` (:mod:`fedlearn.client.stragglers`) a round's stragglers train fewer epochs; with ``personal``
    (:mod:`fedlearn.personal`) clients keep and train something of their own.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Dataset,
        partitions: list[torch.Tensor],
        config: LocalJobConfig,
        label_flip: frozenset[int] = frozenset(),
        uplink: Uplink | None = None,
        stragglers: RoundStragglers | None = None,
        personal: Personal | None = None,
    ):
        self.model = model
        self.params = flat_parameters(model)  # walked once, used by every job
        self.data = data
        self.partitions = [p.to(data.train_x.device) for p in partitions]
        self.config = config
        self.label_flip = label_flip
        self._flipped_y = flip_labels(data.train_y, data.num_classes) if label_flip else None
        self.algorithm = LOCAL_ALGORITHMS[config.drift_correction].part
        self.objective = self.algorithm.objective(config)  # a part, not a branch
        self.hooks = self.objective if acts_on_steps(self.objective) else None
        self.uplink = uplink or Uplink()  # what the server receives of a trained job
        self.stragglers = stragglers
        self.personal = personal
        self._refuse_what_the_flags_refuse()
        self.augment = build_augment(config.augment, data.black())
        # built once, its state cleared for every job: the same numbers as a new one (500 us saved per job)
        self.optimizer = make_optimizer(config.optimizer, self.params, config.lr)
        self.generator = torch.Generator()  # re-seeded for every job

    def _refuse_what_the_flags_refuse(self) -> None:
        """Parts built from Python meet the rules the flags are checked by (UsageError, the same line)."""
        codec = self.uplink.codec.name if self.uplink.codec is not None else "none"
        problem = compressed_control_problem(codec) if self.algorithm.sends_control else None
        if problem is None and self.personal is not None and self.personal.withheld:
            problem = withheld_layers_problem(codec)
        if problem is not None:
            raise UsageError(problem)

    def num_samples(self, client: int) -> int:
        """Samples the client holds."""
        return int(self.partitions[client].numel())

    def epochs(self, client: int, job_key: int | None = None) -> int:
        """Local epochs of ``client``'s job ``job_key`` (a round's stragglers train fewer; None: a full job)."""
        if self.stragglers is None or job_key is None:
            return self.config.epochs
        return self.stragglers.epochs_of(client, job_key)

    def num_batches(self, client: int, job_key: int | None = None) -> int:
        """Optimizer steps of ``client``'s job ``job_key`` (None: a full job)."""
        return count_batches(self.num_samples(client), self.config.batch_size, self.epochs(client, job_key))

    def run(
        self,
        client: int,
        global_weights: torch.Tensor,
        job_key: int,
        on_batch: Callable[[], None] | None = None,
        control: torch.Tensor | None = None,
    ) -> ClientUpdate:
        """Train ``client`` from ``global_weights``; ``job_key`` (round or dispatch number) seeds its shuffles;
        ``control`` is the server's control variate (SCAFFOLD)."""
        job = Job(client, global_weights, control)
        self.objective.start(self.model, job)
        start = global_weights if self.personal is None else self.personal.start(client, global_weights)
        key = (seeding.LOCAL_TRAIN, job_key, client)
        trained, stats = self.fit(client, start, self.epochs(client, job_key), key, self.hooks, on_batch)
        extra = self.objective.finish(job, trained, stats.batches)
        withheld = 0
        if self.personal is not None:
            trained, stats = self.personal.finish(self, client, job_key, global_weights, trained, stats)
            withheld = self.personal.withheld
        payload = self.uplink.send(client, job_key, global_weights, trained)
        return ClientUpdate(client, payload, self.num_samples(client), stats, extra, withheld)

    def fit(
        self,
        client: int,
        start: torch.Tensor,
        epochs: int,
        stream: tuple[int, ...],
        hooks: StepHooks | None = None,
        on_batch: Callable[[], None] | None = None,
    ) -> tuple[torch.Tensor, TrainStats]:
        """Train from ``start`` for ``epochs`` passes over ``client``'s samples (a fresh optimizer; shuffles from
        the seed's stream keyed by ``stream``); the trained weights and what training did."""
        set_flat(self.params, start)
        self.optimizer.state.clear()  # fresh state for every job
        self.generator.manual_seed(seeding.derive_seed(self.config.seed, *stream))
        passes = Passes(self.partitions[client], epochs, self.config.batch_size, self.generator, self.augment)
        labels = self._flipped_y if client in self.label_flip else self.data.train_y
        stats = train(self.model, self.optimizer, self.data.train_x, labels, passes, on_batch, hooks)
        return get_flat(self.params), stats

    @property
    def sends_control(self) -> bool:
        """Whether jobs take the server's control variate and return its change (SCAFFOLD)."""
        return self.algorithm.sends_control

    @property
    def client_state_keys(self) -> tuple[str, ...]:
        """The checkpoint keys of what clients keep between jobs (the local algorithm's, error-feedback
        residuals): a client with such state must train on one worker."""
        personal = self.personal.state_key if self.personal is not None and self.personal.keeps_state else None
        keys = (self.algorithm.client_state, self.uplink.state_key, personal)
        return tuple(key for key in keys if key is not None)

    @property
    def client_state_sizes(self) -> dict[str, int]:
        """The length of each client's vector under a key, where it is not the model's (FedPer's heads)."""
        withheld = self.personal.withheld if self.personal is not None else 0
        return {self.personal.state_key: withheld} if withheld else {}

    @property
    def withheld(self) -> int:
        """Entries of the weights clients never send nor are sent (FedPer's personal layers)."""
        return self.personal.withheld if self.personal is not None else 0

    def state(self) -> dict[str, Any]:
        """What the clients keep between jobs (SCAFFOLD's control variates, error-feedback residuals)."""
        personal = self.personal.state() if self.personal is not None else {}
        return {**self.objective.state(), **self.uplink.state(), **personal}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        self.objective.restore(state)
        self.uplink.restore(state)
        if self.personal is not None:
            self.personal.restore(state)
