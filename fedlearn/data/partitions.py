"""Split the training set among clients: lists of index tensors into the shared data.

Every partition is seeded, disjoint, covers the training set and gives every
client at least one sample. Label skew comes from the kind (``iid``,
``dirichlet``, ``shards``, ``classes``); quantity skew (``size_skew``) is a
separate knob: client size weights ``exp(size_skew * Z)``, normalised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..registry import Entry, Flag, Flags, Range, Registry, require
from . import dataset_info
from .dataset import kept_count


@dataclass(frozen=True)
class PartitionSpec:
    """What ``--partition`` and its companion flags ask for."""

    kind: str = "iid"
    dirichlet_alpha: float = 0.5
    shards_per_client: int = 2
    classes_per_client: int = 2
    size_skew: float = 0.0


@dataclass(frozen=True)
class PartitionTask:
    """What a partition kind splits: the labels (and, for a natural partition, each sample's client id), how
    many clients, the spec, the clients' size weights, the seeded generator, the number of classes, and every
    flag's value (for a plug-in partition that declares flags of its own; None outside a run)."""

    labels: np.ndarray
    num_clients: int
    spec: PartitionSpec
    weights: np.ndarray
    rng: np.random.Generator
    num_classes: int
    clients: np.ndarray | None = None
    flags: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PartitionKind:
    """A partition kind: how it splits (each client's sample indices) and how the table names it."""

    split: Callable[[PartitionTask], list[np.ndarray]]
    describe: Callable[[PartitionSpec], str] = lambda spec: ""


def make_partition(
    spec: PartitionSpec,
    labels: torch.Tensor,
    num_clients: int,
    rng: np.random.Generator,
    num_classes: int = 10,
    clients: torch.Tensor | None = None,
    flags: Mapping[str, Any] | None = None,
) -> list[torch.Tensor]:
    """Client index tensors for ``labels`` as ``spec`` asks; UsageError when the request is impossible."""
    n = int(labels.numel())
    if num_clients < 1:
        raise UsageError(f"--num_clients must be at least 1, got {num_clients}")
    if num_clients > n:
        raise UsageError(f"--num_clients {num_clients} exceeds the {n} training samples: every client needs one")
    if spec.kind not in PARTITIONS:
        raise UsageError(f"--partition {spec.kind!r}: choose from {', '.join(PARTITIONS)}")
    y = labels.cpu().numpy()
    weights = _size_weights(num_clients, spec.size_skew, rng)
    ids = None if clients is None else clients.cpu().numpy()
    parts = PARTITIONS[spec.kind].part.split(PartitionTask(y, num_clients, spec, weights, rng, num_classes, ids, flags))
    _fill_empty(parts)
    return [torch.from_numpy(p.astype(np.int64)) for p in parts]


def iid_partition(num_samples: int, num_clients: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """Shuffle the indices and cut them into ``num_clients`` near-equal parts (sizes differ by at most one)."""
    labels = torch.zeros(num_samples, dtype=torch.int64)
    return make_partition(PartitionSpec("iid"), labels, num_clients, rng)


def _size_weights(num_clients: int, size_skew: float, rng: np.random.Generator) -> np.ndarray:
    if size_skew == 0:
        return np.full(num_clients, 1.0 / num_clients)
    w = np.exp(size_skew * rng.standard_normal(num_clients))
    return w / w.sum()


def _split_by_weights(indices: np.ndarray, weights: np.ndarray) -> list[np.ndarray]:
    """Cut ``indices`` into consecutive parts whose sizes follow ``weights`` (largest remainders rounding)."""
    n = len(indices)
    exact = weights * n
    counts = np.floor(exact).astype(np.int64)
    shortfall = n - int(counts.sum())
    if shortfall:
        counts[np.argsort(-(exact - counts), kind="stable")[:shortfall]] += 1
    return list(np.split(indices, np.cumsum(counts)[:-1]))


def _iid(task: PartitionTask) -> list[np.ndarray]:
    """Shuffled, then cut by the size weights."""
    return _split_by_weights(task.rng.permutation(len(task.labels)), task.weights)


def _dirichlet(task: PartitionTask) -> list[np.ndarray]:
    """Each class split among the clients by proportions ~ Dir(alpha), tilted by the size weights."""
    y, num_clients, alpha, weights, rng = (
        task.labels,
        task.num_clients,
        task.spec.dirichlet_alpha,
        task.weights,
        task.rng,
    )
    if not alpha > 0:
        raise UsageError(f"--dirichlet_alpha must be positive, got {alpha}")
    pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in range(task.num_classes):
        members = rng.permutation(np.flatnonzero(y == c))
        if len(members) == 0:
            continue
        share = rng.dirichlet(np.full(num_clients, alpha)) * weights
        share = share / share.sum() if share.sum() > 0 else weights
        for k, part in enumerate(_split_by_weights(members, share)):
            pieces[k].append(part)
    return [np.concatenate(p) if p else np.empty(0, dtype=np.int64) for p in pieces]


def _shards(task: PartitionTask) -> list[np.ndarray]:
    """McMahan et al.'s pathological split: sort by label, cut ``num_clients * per_client`` shards, deal them out."""
    if task.spec.size_skew > 0:
        raise UsageError("--size_skew does not apply to --partition shards (its shards are equal by construction)")
    y, num_clients, per_client, rng = task.labels, task.num_clients, task.spec.shards_per_client, task.rng
    if per_client < 1:
        raise UsageError(f"--shards_per_client must be a positive integer, got {per_client}")
    num_shards = num_clients * per_client
    if num_shards > len(y):
        raise UsageError(
            f"--num_clients x --shards_per_client = {num_shards} shards exceeds the {len(y)} training samples"
        )
    shuffled = rng.permutation(len(y))
    by_label = shuffled[np.argsort(y[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_shards)
    order = rng.permutation(num_shards)
    return [
        np.concatenate([shards[s] for s in order[k * per_client : (k + 1) * per_client]]) for k in range(num_clients)
    ]


def _classes(task: PartitionTask) -> list[np.ndarray]:
    """Each client holds only ``per_client`` labels; every label is held by someone; a label's samples are
    shared among its holders in proportion to their size weights."""
    y, num_clients, per_client, weights, rng = (task.labels, task.num_clients, task.spec.classes_per_client,
                                                task.weights, task.rng)  # fmt: skip
    present = np.unique(y)
    if not 1 <= per_client <= len(present):
        raise UsageError(f"--classes_per_client must be between 1 and {len(present)}, got {per_client}")
    if num_clients * per_client < len(present):
        raise UsageError(
            f"--num_clients x --classes_per_client = {num_clients * per_client} cannot cover the "
            f"{len(present)} labels of the training set"
        )
    deck = rng.permutation(present)
    holders: dict[int, list[int]] = {int(c): [] for c in present}
    for k in range(num_clients):
        for j in range(per_client):
            holders[int(deck[(k * per_client + j) % len(deck)])].append(k)
    pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c, owners in holders.items():
        members = rng.permutation(np.flatnonzero(y == c))
        share = weights[owners] / weights[owners].sum()
        for k, part in zip(owners, _split_by_weights(members, share)):
            pieces[k].append(part)
    return [np.concatenate(p) if p else np.empty(0, dtype=np.int64) for p in pieces]


def _natural(task: PartitionTask) -> list[np.ndarray]:
    """Each client id the samples carry is one client, holding its samples in their order."""
    if task.clients is None:
        raise UsageError("--partition natural: the dataset's samples carry no client ids")
    if task.spec.size_skew > 0:
        raise UsageError("--size_skew does not apply to --partition natural (the clients' sizes are the data's)")
    ids, owner = np.unique(task.clients, return_inverse=True)
    if len(ids) != task.num_clients:
        raise UsageError(f"--num_clients {task.num_clients}: the dataset's samples belong to {len(ids)} clients "
                         f"(--partition natural); give --num_clients {len(ids)}")  # fmt: skip
    order = np.argsort(owner, kind="stable")
    return list(np.split(order, np.cumsum(np.bincount(owner, minlength=len(ids)))[:-1]))


def _check_natural(flags: Flags, script: str) -> None:
    """Natural clients need data that carry client ids, as many clients as the data have, and no other test sets
    than theirs."""
    data = dataset_info(flags.dataset)
    require(data.client_ids, f"--partition natural: --dataset {flags.dataset}'s samples carry no client ids; "
            "choose iid, dirichlet, shards or classes")  # fmt: skip
    count = data.clients(flags)  # None: found when the data are split
    count = None if count is None else kept_count(count, flags.data_fraction)
    require(count is None or flags.num_clients == count,
            f"--num_clients {flags.num_clients}: the data's samples belong to {count} clients "
            f"(--partition natural); give --num_clients {count} or leave it out")  # fmt: skip
    require(not (data.client_tests and flags.client_test_frac > 0), "--client_test_frac: the data give each client "
            "its own test samples (client_test); drop --client_test_frac")  # fmt: skip


def natural(flags: Flags) -> bool:
    """Whether the run's clients are the ones its data come with."""
    return flags.partition == "natural"


def _active(flags: Flags, script: str) -> bool:
    """The federated scripts always partition; the baseline only when its clients hold out test sets (or the
    partition is shown)."""
    return script != "run_baseline" or flags.client_test_frac > 0 or flags.show_partition


PARTITIONS = Registry.of(
    "partitions",
    Flag("partition", None, str, group="partition", federated=True, older="iid",
         derive=lambda flags, script: dataset_info(flags.dataset).default_partition,
         help="iid; dirichlet label skew (--dirichlet_alpha); shards (McMahan et al.: sort by label, deal "
              "--shards_per_client shards to each client); classes (each client holds only --classes_per_client "
              "labels); natural: one client per client id the dataset's samples carry (default: natural for such "
              "data, else iid)"),
    [
        Entry("iid", PartitionKind(_iid), "shuffled and cut"),
        Entry("dirichlet", PartitionKind(_dirichlet, lambda s: f" (alpha {s.dirichlet_alpha:g})"),
              "label proportions from Dir(alpha)",
              flags=(Flag("dirichlet_alpha", 0.5, float, group="partition", federated=True, valid=Range(1e-3, 1e4),
                          help="Dirichlet concentration: small = skewed"),)),
        Entry("shards", PartitionKind(_shards, lambda s: f" ({s.shards_per_client} per client)"),
              "label-sorted shards dealt out",
              flags=(Flag("shards_per_client", 2, int, group="partition", federated=True, count=True,
                          help="shards per client (shards)"),)),
        Entry("classes", PartitionKind(_classes, lambda s: f" ({s.classes_per_client} label"
                                                         f"{'s' if s.classes_per_client != 1 else ''} per client)"),
              "a few labels per client",
              flags=(Flag("classes_per_client", 2, int, group="partition", federated=True, count=True,
                          help="labels per client (classes)"),)),
        Entry("natural", PartitionKind(_natural, lambda s: " (the clients the data come with)"),
              "the clients the data come with", check=_check_natural),
    ],
    flags=(
        Flag("size_skew", 0.0, float, group="partition", federated=True, valid=Range(0, 10), headline=False,
             help="quantity skew: client sizes ~ exp(size_skew * N(0,1)); 0 = equal"),
        Flag("show_partition", False, group="partition", federated=True, headline=False, setting=False,
             resumable=True,
             help="print every client's size and label histogram"),
        Flag("client_test_frac", 0.0, float, group="partition", valid=Range(0, 1, high_open=True), headline=False,
             help="hold out this fraction of each client's samples (stratified by label) as its own test set; the "
                  "global model is also evaluated on each (per-client accuracy, fairness); the baseline then trains "
                  "on the rest of the clients' samples only; 0 = off"),
    ),
    active=_active,
)  # fmt: skip
"""Every partition kind by name (``--partition``): adding one is a split function and one entry here."""


def _fill_empty(parts: list[np.ndarray]) -> None:
    """Give every empty client one sample taken from the largest client (in place)."""
    for k, part in enumerate(parts):
        if len(part) == 0:
            donor = max(range(len(parts)), key=lambda j: len(parts[j]))
            parts[k], parts[donor] = parts[donor][-1:], parts[donor][:-1]


def hold_out(
    parts: list[torch.Tensor], labels: torch.Tensor, fraction: float, rng: np.random.Generator
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Split every client's samples into its training part and its own test set, stratified: of each label a
    client holds ``n`` samples of, ``round(fraction * n)`` (halves up) drawn at random are held out. Both
    parts come sorted; UsageError when a client would keep no training sample, or hold out none."""
    y = labels.cpu().numpy()
    train, test, empty = [], [], []
    for k, part in enumerate(parts):
        shuffled = rng.permutation(part.numpy())
        grouped = shuffled[np.argsort(y[shuffled], kind="stable")]  # by label, random within a label
        _, first, counts = np.unique(y[grouped], return_index=True, return_counts=True)
        take = np.floor(fraction * counts + 0.5).astype(np.int64)
        rank = np.arange(len(grouped)) - np.repeat(first, counts)  # position within its label
        held = rank < np.repeat(take, counts)
        if held.all():
            raise UsageError(f"--client_test_frac {fraction:g} leaves client {k} ({len(grouped)} samples) with "
                             "no training sample; use a smaller fraction or fewer clients")  # fmt: skip
        if not held.any():
            empty.append((k, 0.5 / counts.max()))  # its largest label's share rounds to no sample
        train.append(torch.from_numpy(np.sort(grouped[~held])))
        test.append(torch.from_numpy(np.sort(grouped[held])))
    if empty:
        raise UsageError(
            f"--client_test_frac {fraction:g} holds out no sample of {len(empty)} client(s) (client "
            f"{empty[0][0]} first); from {max(f for _, f in empty):.3g} on, every client holds one out"
        )
    return train, test


@dataclass(frozen=True)
class ClientPartition:
    """A drawn partition with its label histograms and per-client label skew (of the training parts); with
    ``--client_test_frac``, every client's held-out test set."""

    spec: PartitionSpec
    parts: list[torch.Tensor]
    histograms: torch.Tensor  # (clients, classes)
    skew: torch.Tensor  # per-client total-variation distance from the global label distribution
    held_out: list[torch.Tensor] | None = None

    @classmethod
    def create(
        cls, spec: PartitionSpec, labels: torch.Tensor, num_clients: int, rng: np.random.Generator, **options: Any
    ) -> ClientPartition:
        """Draw the partition ``spec`` asks for and measure it (``options``: :func:`make_partition`'s
        ``num_classes``, ``clients``, ``flags``)."""
        parts = make_partition(spec, labels, num_clients, rng, **options)
        histograms = label_histograms(parts, labels, options.get("num_classes", 10))
        return cls(spec, parts, histograms, label_skew(histograms))

    def holding_out(self, fraction: float, labels: torch.Tensor, rng: np.random.Generator) -> ClientPartition:
        """The partition with ``fraction`` of every client's samples held out as its test set (:func:`hold_out`)."""
        train, test = hold_out(self.parts, labels, fraction, rng)
        histograms = label_histograms(train, labels, self.histograms.shape[1])
        return ClientPartition(self.spec, train, histograms, label_skew(histograms), test)

    def describe(self) -> str:
        """One line for the Hyperparameters table, e.g. ``dirichlet (alpha 0.1)``."""
        spec = self.spec
        detail = PARTITIONS[spec.kind].part.describe(spec)
        return spec.kind + detail + (f", size skew {spec.size_skew:g}" if spec.size_skew else "")

    def summary(self) -> dict[str, object]:
        """The JSON's ``partition`` section."""
        return {
            **vars(self.spec),
            "label_skew_mean": float(self.skew.mean()),
            "sizes": partition_sizes(self.parts),
            "label_histograms": self.histograms.tolist(),
            **({"held_out_sizes": partition_sizes(self.held_out)} if self.held_out is not None else {}),
        }


def partition_sizes(parts: list[torch.Tensor]) -> list[int]:
    """Number of samples held by each client."""
    return [int(p.numel()) for p in parts]


def label_histograms(parts: list[torch.Tensor], labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """``(clients, classes)`` sample counts per label."""
    y = labels.cpu()
    return torch.stack([torch.bincount(y[p], minlength=num_classes) for p in parts])


def label_skew(histograms: torch.Tensor) -> torch.Tensor:
    """Each client's total-variation distance from the global label distribution (0 = IID, 1 = disjoint)."""
    counts = histograms.to(torch.float64)
    local = counts / counts.sum(dim=1, keepdim=True)
    overall = counts.sum(dim=0) / counts.sum()
    return 0.5 * (local - overall).abs().sum(dim=1)
