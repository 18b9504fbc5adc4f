"""The core flags (the reference system's, and the run's seed, device and output), the ``--help`` groups, and
:data:`DECLARERS`: every part that declares flags, in the order their flags are shown and checked.

A part's own flags live in its module (a dataset's in :mod:`fedlearn.data`, a rule's in
:mod:`fedlearn.server.rules`, ...); adding an entry to a registry needs no change here. Adding a new *kind* of
part is one line in :data:`DECLARERS`.
"""

from __future__ import annotations

import math

from ..client.algorithms import LOCAL_ALGORITHMS
from ..client.stragglers import STRAGGLERS
from ..comm.clock import BANDWIDTHS, DELAYS
from ..comm.codecs import CODECS
from ..core.files import check_new_file
from ..core.training import OPTIMIZERS
from ..data import DATASETS, dataset_info
from ..data.augment import AUGMENTATIONS
from ..data.dataset import kept_count
from ..data.partitions import PARTITIONS, natural
from ..distributed.processes import PROCESSES
from ..events.sinks import SINKS
from ..models import MODELS
from ..personal import LOCAL_ONLY, PERSONALIZATION
from ..registry import FEDERATED_SCRIPTS, Flag, Flags, FlagSet, Range, require
from ..server.asynchronous import ASYNC_ALGORITHMS
from ..server.attacks import ATTACK_KINDS
from ..server.checks import CLIPPING
from ..server.privacy import PRIVACY
from ..server.rules import AGGREGATION_RULES
from ..server.staleness import STALENESS
from ..server.steps import SERVER_STEPS

GROUPS: dict[str, tuple[str, str | None]] = {
    "data": ("data", None),
    "training": ("model and training", None),
    "federation": ("federation (federated scripts)", None),
    "partition": ("federation: the clients' data (federated scripts; the baseline uses them with --client_test_frac)",
                  None),
    "clock": ("clients' speeds on the simulated clock (federated scripts)", None),
    "async": ("asynchronous (run_async)", None),
    "server": ("server optimizer (run_federated; run_async --algorithm fedbuff)", None),
    "comm": ("communication: compressed updates, bandwidth on the clock (federated scripts)", None),
    "privacy": ("client-level differential privacy, DP-FedAvg (run_federated)", None),
    "byzantine": ("Byzantine clients and defences (federated scripts)",
                  "Attacks act on updates (client weights minus the model they started from) when the server "
                  "aggregates them; alie and ipm see the honest updates of the same round or FedBuff buffer "
                  "(omniscient adversary). Checks (shape, dtype, NaN/inf) reject bad updates under every rule."),
    "multi": ("distributed and checkpoints (federated scripts)",
              "Start with torchrun, e.g. torchrun --standalone --nproc-per-node 3 run_federated.py --distributed: "
              "rank 0 is the server, the other ranks host the clients (round-robin). c10d's rendezvous has no "
              "authentication: run it only inside a trusted network."),
    "personal": ("personalization and the local-only baseline", None),
    "output": ("output", None),
}  # fmt: skip
"""Every ``--help`` group in order: key -> (title, description). A flag of a group not listed here (a plug-in's)
gets a group titled by its key, before ``output``."""

TRAINING = FlagSet(
    "training",
    (
        Flag("batch_size", 100, int, count=True, help="minibatch size"),
        Flag("epoch", 15, int, count=True, unused_by=FEDERATED_SCRIPTS,
             help="epochs of centralized training (run_baseline)"),
        Flag("init_lr", 5e-5, float, valid=Range(0, 100, low_open=True), help="learning rate"),
    ),
)  # fmt: skip
"""Minibatch training (all scripts): the reference system's flags."""

RUN = FlagSet(
    "run",
    (
        Flag("seed", 0, int, valid=Range(0, 2**63 - 1), help="seed of every random choice; same seed, same numbers"),
        Flag("target_acc", None, float, valid=Range(0, 1, low_open=True), setting=False, resumable=True,
             headline=False, help="test accuracy (fraction, e.g. 0.85) whose first reaching is reported (time to "
                                  "accuracy)"),
        Flag("device", "auto", str, choices=("auto", "cpu", "cuda"), help="auto: cuda when available"),
    ),
)  # fmt: skip
"""What every run is told: its seed, a target accuracy, the device."""


def _check_federation(flags: Flags, script: str) -> None:
    require(
        flags.num_select_clients <= flags.num_clients,
        f"--num_select_clients ({flags.num_select_clients}) cannot exceed --num_clients ({flags.num_clients})",
    )


def _federation_flag(name: str, default: int, help: str, **options: object) -> Flag:
    return Flag(name, default, int, group="federation", federated=True, count=True, help=help, **options)


def _clients(flags: Flags, script: str) -> int:
    """8, or with natural clients as many as the data have (those ``--data_fraction`` keeps)."""
    count = dataset_info(flags.dataset).clients(flags) if natural(flags) else None
    return 8 if count is None else kept_count(count, flags.data_fraction)


def _picked(flags: Flags, script: str) -> int:
    """4, or with natural clients a tenth of them (at least one)."""
    return max(1, math.ceil(flags.num_clients / 10)) if natural(flags) else 4


NOT_BASELINE = ("run_baseline",)
FEDERATION = FlagSet(
    "federation",
    (
        _federation_flag("global_epoch", 5, "rounds of FedAvg", resumable=True, unused_by=NOT_BASELINE),
        _federation_flag("local_epoch", 5, "local epochs per client job", unused_by=NOT_BASELINE),
        _federation_flag(
            "num_clients",
            None,
            "clients sharing the training set (split by --partition; default 8, "
            "or with --partition natural the number of clients in the data)",
            derive=_clients,
            after=("partition",),
        ),
        _federation_flag(
            "num_select_clients",
            None,
            "clients picked at random each round (default 4, or with --partition natural a tenth of the clients)",
            unused_by=NOT_BASELINE,
            derive=_picked,
            after=("num_clients", "partition"),
        ),
    ),
    check=_check_federation,
    active=lambda flags, script: script != "run_baseline" or flags.client_test_frac > 0,
)
"""Clients and rounds: the reference system's federated flags (the baseline uses the number of clients when
they hold out test sets)."""


def _check_output(flags: Flags, script: str) -> None:
    if flags.save is not None:
        check_new_file(flags.save, "--save")


OUTPUT = FlagSet(
    "output",
    (
        Flag("save", None, str, group="output", metavar="PATH", setting=False, resumable=True, headline=False,
             help="write the results JSON here"),
        Flag("no_progress", False, group="output", setting=False, resumable=True, headline=False,
             help="hide the progress bar"),
    ),
    check=_check_output,
)  # fmt: skip
"""What the run writes and shows."""

DECLARERS: tuple[FlagSet, ...] = (
    DATASETS, AUGMENTATIONS, TRAINING, MODELS, OPTIMIZERS, RUN, FEDERATION, STRAGGLERS, LOCAL_ALGORITHMS, PARTITIONS,
    DELAYS,
    SERVER_STEPS, CODECS, BANDWIDTHS, PRIVACY, ATTACK_KINDS, AGGREGATION_RULES, CLIPPING, ASYNC_ALGORITHMS,
    STALENESS, PERSONALIZATION, LOCAL_ONLY, PROCESSES, SINKS, OUTPUT,
)  # fmt: skip
"""Every part that declares flags: its flags appear in this order within their ``--help`` group, and its checks
run in this order (the first failing one is reported)."""
