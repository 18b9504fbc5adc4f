"""One frozen run configuration, built once from the parsed flags: the only reader of the argparse namespace.

:func:`from_namespace` resolves the defaults that depend on other flags (without
touching the namespace), validates every value (:func:`fedlearn.config.cli.validate`)
and groups the result: data, training, federation, clock, threat and defence,
asynchronous server, processes and checkpoints, output. ``flags`` keeps every
flag's resolved value, for the Hyperparameters table, the JSON's ``args`` and a
checkpoint's identity.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..comm.clock import ClockConfig
from ..data.partitions import PartitionSpec
from ..server.asynchronous import AsyncConfig
from ..server.rules import RuleConfig
from ..server.steps import ServerOptConfig
from .cli import resolve_defaults, validate


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
    """The asynchronous server's rule and the loop's budget (run_async only)."""

    server: AsyncConfig
    concurrency: int
    max_updates: int
    eval_every: int


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


def from_namespace(args: argparse.Namespace, script: Script) -> RunConfig:
    """Resolve, validate (UsageError naming the flag) and group the parsed flags of ``script``."""
    flags = resolve_defaults(vars(args), script.value)
    validate(flags, script.value)
    return build(flags, script)


def build(flags: Mapping[str, Any], script: Script) -> RunConfig:
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
    )


def _async(f: Mapping[str, Any]) -> AsyncRunConfig:
    server = AsyncConfig(f["algorithm"], f["alpha"], f["staleness"], f["staleness_a"], f["staleness_b"],
                         f["buffer_size"], f["max_staleness"])  # fmt: skip
    return AsyncRunConfig(server, f["concurrency"], f["max_updates"], f["eval_every"])
