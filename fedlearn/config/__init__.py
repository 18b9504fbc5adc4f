"""The run configuration: flags declared by the parts (:mod:`.flags`, :mod:`fedlearn.registry`), parsed
(:mod:`.parser`), resolved and checked (:mod:`.validate`), their status derived (:mod:`.status`), and frozen
into one :class:`RunConfig`, built once: the only reader of the argparse namespace.

:func:`from_namespace` (the command line) and :func:`from_flags` (the library) resolve the defaults that depend
on other flags (without touching the namespace), validate every value and group the result: data, training,
federation, clock, threat and defence, asynchronous server, processes and checkpoints, output. ``flags`` keeps
every flag's resolved value, for the Hyperparameters table, the JSON's ``args``, a checkpoint's identity and the
parts of plug-ins, which read their own flags there.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..comm.clock import ClockConfig
from ..data.partitions import PartitionSpec
from ..registry import Range
from ..server.asynchronous import ASYNC_ALGORITHMS, AsyncConfig
from ..server.rules import RuleConfig
from ..server.steps import ServerOptConfig
from .parser import build_parser
from .status import all_flags
from .validate import check_choices, resolve_defaults, validate


class Script(str, enum.Enum):
    """Which entry script runs (its value is the script's name, as in the results JSON)."""

    BASELINE = "run_baseline"
    FEDERATED = "run_federated"
    ASYNC = "run_async"


@dataclass(frozen=True)
class DataConfig:
    """Where the dataset is and which one."""

    data_dir: str
    dataset: str
    download: bool


@dataclass(frozen=True)
class TrainingConfig:
    """Model and minibatch training, shared by the centralized run and every local job."""

    model: str
    optimizer: str
    lr: float
    batch_size: int
    epochs: int  # the baseline's epochs
    seed: int
    target_accuracy: float | None
    channels_last: bool
    device: str
    augment: str = "none"  # crop-flip: random padded crops and flips of every training batch


@dataclass(frozen=True)
class FederationConfig:
    """Clients, their data and the synchronous rounds."""

    num_clients: int
    num_select: int
    rounds: int
    local_epochs: int
    prox_mu: float
    partition: PartitionSpec
    show_partition: bool
    client_test_frac: float  # each client's held-out share (0: none)
    drift_correction: str = "none"  # scaffold, fednova


@dataclass(frozen=True)
class ThreatConfig:
    """Byzantine clients, their attack, and the server's clipping and rule."""

    byzantine: int
    attack: str
    attack_scale: float | None
    clip_norm: float | None
    rule: RuleConfig


@dataclass(frozen=True)
class CommConfig:
    """How clients encode their updates (``--compress``)."""

    compress: str = "none"
    ratio: float = 0.01
    error_feedback: bool = False
    qsgd_levels: int = 16


@dataclass(frozen=True)
class PrivacyFlags:
    """Client-level DP (``--dp_clip``; None: off)."""

    clip: float | None = None
    noise: float = 1.0
    delta: float = 1e-5


@dataclass(frozen=True)
class AsyncRunConfig:
    """The asynchronous server's rule and the loop's budget (run_async only); ``buffered``: the algorithm steps
    on buffers of deltas (FedBuff) rather than mixing each update in (FedAsync)."""

    server: AsyncConfig
    concurrency: int
    max_updates: int
    eval_every: int
    buffered: bool = False


@dataclass(frozen=True)
class MultiConfig:
    """Several processes (``--distributed``) and checkpoints."""

    distributed: bool
    timeout: float
    checkpoint: str | None
    checkpoint_every: int
    resume: str | None
    workers: int = 1
    threads_per_worker: int | None = None  # None: cores / workers with workers > 1, else torch's default


@dataclass(frozen=True)
class OutputConfig:
    """What the run writes and shows."""

    save: str | None
    progress: bool


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs to know, grouped; ``flags`` holds every flag's resolved value."""

    script: Script
    data: DataConfig
    training: TrainingConfig
    federation: FederationConfig
    clock: ClockConfig
    threat: ThreatConfig
    server_opt: ServerOptConfig
    comm: CommConfig
    privacy: PrivacyFlags
    asynchronous: AsyncRunConfig | None
    multi: MultiConfig
    output: OutputConfig
    flags: Mapping[str, Any]
    given: frozenset[str] = frozenset()  # the flags set away from their defaults


def defaults(script: str) -> dict[str, Any]:
    """Every flag of ``script`` at its declared default (before the defaults that depend on other flags)."""
    return {flag.name: flag.default for flag in all_flags(script)}


def from_namespace(args: argparse.Namespace, script: Script) -> RunConfig:
    """Resolve, validate (UsageError naming the flag) and group the parsed flags of ``script``."""
    values = vars(args)
    base = defaults(script.value)
    return from_flags(values, script, frozenset(k for k, v in values.items() if v != base.get(k)))


def from_flags(values: Mapping[str, Any], script: Script, given: frozenset[str] = frozenset()) -> RunConfig:
    """Resolve, validate and group every flag of ``script`` (``values``: each flag's value, parsed; ``given``: those
    the user set)."""
    check_choices(values, script.value)
    flags = resolve_defaults(values, script.value)
    validate(flags, script.value, given)
    return build(flags, script, given)


def build(flags: Mapping[str, Any], script: Script, given: frozenset[str] = frozenset()) -> RunConfig:
    """Group already validated, resolved ``flags``."""
    f = MappingProxyType(dict(flags))
    partition = PartitionSpec(f["partition"], f["dirichlet_alpha"], f["shards_per_client"], f["classes_per_client"],
                              f["size_skew"])  # fmt: skip
    rule = RuleConfig(f["gar"], f["gar_f"], f["trim"], f["multikrum_m"], f["gm_iters"])
    return RunConfig(
        script=script,
        data=DataConfig(f["data_dir"], f["dataset"], not f["no_download"]),
        training=TrainingConfig(
            f["model"],
            f["optimizer"],
            f["init_lr"],
            f["batch_size"],
            f["epoch"],
            f["seed"],
            f["target_acc"],
            not f["no_channels_last"],
            f["device"],
            f["augment"],
        ),  # fmt: skip
        federation=FederationConfig(
            f["num_clients"],
            f["num_select_clients"],
            f["global_epoch"],
            f["local_epoch"],
            f["prox_mu"],
            partition,
            f["show_partition"],
            f["client_test_frac"],
            f["drift_correction"],
        ),  # fmt: skip
        clock=ClockConfig(
            f["delay"],
            f["client_rate"],
            f["comm_delay"],
            f["straggler_fraction"],
            f["straggler_slowdown"],
            f["delay_spread"],
            f["uplink_mbps"],
            f["downlink_mbps"],
            f["latency"],
            f["bandwidth"],
            f["bandwidth_spread"],
        ),  # fmt: skip
        threat=ThreatConfig(f["byzantine"], f["attack"], f["attack_scale"], f["clip_norm"], rule),
        server_opt=ServerOptConfig(
            f["server_opt"], f["server_lr"], f["server_momentum"], f["server_b1"], f["server_b2"], f["server_tau"]
        ),
        comm=CommConfig(f["compress"], f["compress_ratio"], f["error_feedback"], f["qsgd_levels"]),
        privacy=PrivacyFlags(f["dp_clip"], f["dp_noise"], f["dp_delta"]),
        asynchronous=_async(f) if script is Script.ASYNC else None,
        multi=MultiConfig(
            f["distributed"],
            f["timeout"],
            f["checkpoint"],
            f["checkpoint_every"],
            f["resume"],
            f["workers"],
            f["threads_per_worker"],
        ),  # fmt: skip
        output=OutputConfig(f["save"], not f["no_progress"]),
        flags=f,
        given=given,
    )


def _async(f: Mapping[str, Any]) -> AsyncRunConfig:
    server = AsyncConfig(f["algorithm"], f["alpha"], f["staleness"], f["staleness_a"], f["staleness_b"],
                         f["buffer_size"], f["max_staleness"])  # fmt: skip
    buffered = ASYNC_ALGORITHMS[f["algorithm"]].part.buffered
    return AsyncRunConfig(server, f["concurrency"], f["max_updates"], f["eval_every"], buffered)


class _LiveRanges(Mapping[str, Range]):
    """Every number flag's valid values, from the live declarations (a plug-in's too)."""

    def _table(self) -> dict[str, Range]:
        return {flag.name: flag.valid for flag in all_flags() if flag.valid is not None}

    def __getitem__(self, name: str) -> Range:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


RANGES: Mapping[str, Range] = _LiveRanges()
"""Every number flag's valid values, checked before any work and shown in --help. The bounds keep every derived
figure finite: job durations (samples / rate, slowdowns exp(sigma Z)), partition weights exp(size_skew Z),
gloo's timeout in milliseconds, int64 fields on the wire."""

__all__ = ["RANGES", "RunConfig", "Script", "build", "build_parser", "defaults", "from_flags", "from_namespace",
           "resolve_defaults", "validate"]  # fmt: skip
