"""The one set of flags shared by all three scripts, and their validation."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..comm.clock import BANDWIDTH_MODELS, DELAY_MODELS
from ..comm.codecs import COMPRESSORS
from ..core.runtime import usable_cores
from ..core.training import MOMENTUM, OPTIMIZERS
from ..data import COLOUR_DATASETS
from ..data.augment import AUGMENTATIONS
from ..data.partitions import PARTITIONS, PartitionSpec
from ..errors import OneLineParser, UsageError
from ..models import COLOUR_MODELS, MODELS
from ..server.asynchronous import ALGORITHMS, AsyncConfig
from ..server.attacks import ATTACKS, DEFAULT_SCALE, NEEDS_HONEST
from ..server.rules import RULES, RuleConfig, check_condition, min_inputs
from ..server.staleness import DEFAULT_A, STALENESS_FUNCTIONS
from ..server.steps import SERVER_OPTIMIZERS, ServerOptConfig

DRIFT_CORRECTIONS = ("none", "scaffold", "fednova")

ASYNC_DEFAULTS = AsyncConfig()
SERVER_DEFAULTS = ServerOptConfig()
PARTITION_DEFAULTS = PartitionSpec()


@dataclass(frozen=True)
class Range:
    """The values a number flag accepts: ``low`` to ``high``, each end closed unless said open."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        low, high = (str(end) if isinstance(end, int) else f"{end:g}" for end in (self.low, self.high))
        return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


# Every number flag's valid values, checked before any work and shown in --help. The bounds keep every
# derived figure finite: job durations (samples / rate, slowdowns exp(sigma Z)), partition weights
# exp(size_skew Z), gloo's timeout in milliseconds, int64 fields on the wire.
RANGES: dict[str, Range] = {
    "init_lr": Range(0, 100, low_open=True),
    "seed": Range(0, 2**63 - 1),
    "target_acc": Range(0, 1, low_open=True),
    "prox_mu": Range(0, 1e4),
    "dirichlet_alpha": Range(1e-3, 1e4),
    "size_skew": Range(0, 10),
    "client_test_frac": Range(0, 1, high_open=True),
    "client_rate": Range(1e-3, 1e9),
    "comm_delay": Range(0, 1e9),
    "straggler_fraction": Range(0, 1),
    "straggler_slowdown": Range(1, 1e6),
    "delay_spread": Range(0, 10),
    "timeout": Range(0, 1e6, low_open=True),
    "attack_scale": Range(-1e6, 1e6),
    "clip_norm": Range(0, 1e12, low_open=True),
    "alpha": Range(0, 1, low_open=True),
    "staleness_a": Range(0, 100),
    "staleness_b": Range(0, 1e9),
    "server_lr": Range(0, 100, low_open=True),
    "server_momentum": Range(0, 1, high_open=True),
    "server_b1": Range(0, 1, high_open=True),
    "server_b2": Range(0, 1, high_open=True),
    "server_tau": Range(0, 1e9, low_open=True),
    "compress_ratio": Range(0, 1, low_open=True),
    "qsgd_levels": Range(1, 2**16 - 1),
    "uplink_mbps": Range(0, 1e6),
    "downlink_mbps": Range(0, 1e6),
    "latency": Range(0, 1e6),
    "bandwidth_spread": Range(0, 10),
    "dp_clip": Range(0, 1e12, low_open=True),
    "dp_noise": Range(0, 1e6),
    "dp_delta": Range(0, 1, low_open=True, high_open=True),
}
# --server_lr's default per --server_opt: 1 keeps FedAvg / FedBuff as published (and FedAvgM as Hsu et al.
# 2019 run it); Reddi et al. 2021 tune eta per task over a grid, 0.01 is in it (and is Flower's FedYogi default)
DEFAULT_SERVER_LR = {"sgd": 1.0, "avgm": 1.0, "adam": 0.01, "yogi": 0.01, "adagrad": 0.01}
# Flags that count something: positive integers, bounded so that every key and counter fits in int64.
COUNTS = ("batch_size", "epoch", "global_epoch", "local_epoch", "num_clients", "num_select_clients",
          "shards_per_client", "classes_per_client", "checkpoint_every", "gm_iters", "buffer_size", "max_updates",
          "eval_every", "multikrum_m", "threads_per_worker")  # fmt: skip
MAX_COUNT = 10**12

DESCRIPTIONS = {
    "run_baseline": "Centralized training on the whole training set: the reference for the federated runs.",
    "run_federated": "Synchronous FedAvg: --num_clients clients, --num_select_clients picked at random each round.",
    "run_async": "Asynchronous aggregation (FedAsync, FedBuff) on a deterministic virtual clock.",
}


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default unless its help already says it (or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


Track = Callable[..., None]  # adds a flag to a group and notes it as one the baseline ignores


class ScriptParser(OneLineParser):
    """A script's parser; ``federated_flags`` names the flags the baseline accepts but ignores."""

    federated_flags: frozenset[str] = frozenset()


def build_parser(script: str) -> argparse.ArgumentParser:
    """The parser for ``script`` (``run_baseline``, ``run_federated``, ``run_async``): every shared flag,
    plus the asynchronous flags for ``run_async``, in the groups ``--help`` shows."""
    parser = ScriptParser(prog=f"{script}.py", description=DESCRIPTIONS.get(script), formatter_class=DefaultsFormatter)
    federated: set[str] = set()

    def track(group: Any, *names: str, **options: Any) -> None:
        federated.add(group.add_argument(*names, **options).dest)

    _add_data_flags(parser)
    _add_training_flags(parser)
    _add_federation_flags(parser, track)
    _add_partition_flags(parser, track)
    _add_clock_flags(parser, track)
    if script == "run_async":
        _add_async_flags(parser)
    _add_server_flags(parser, track)
    _add_comm_flags(parser, track)
    _add_privacy_flags(parser, track)
    _add_byzantine_flags(parser, track)
    _add_multi_flags(parser, track)
    parser.federated_flags = frozenset(federated)
    for action in parser._actions:
        if action.dest in RANGES:
            action.help = f"{action.help}; valid: {RANGES[action.dest]}"
    _add_output_flags(parser)
    return parser


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    """Where the data is and which dataset."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data_dir",
        default="./data",
        help="dataset folder in torchvision's layout (DATA_DIR/MNIST/raw/..., DATA_DIR/cifar-10-batches-py/...)",
    )
    data.add_argument(
        "--dataset",
        default="auto",
        choices=["auto", "mnist", "fashion-mnist", "cifar10"],
        help="auto: MNIST if present or downloadable, else Fashion-MNIST (with a notice; never CIFAR-10)",
    )
    data.add_argument(
        "--augment",
        default=None,
        choices=list(AUGMENTATIONS),
        help="training batches only: crop-flip = random crops of the 4-pixel-padded image and left-right flips, "
        "drawn from the run's seed (default: crop-flip on CIFAR-10, none on the greyscale sets)",
    )
    data.add_argument("--no_download", action="store_true", help="never try to download a missing dataset")


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    """Model and minibatch training (all scripts)."""
    train = parser.add_argument_group("model and training")
    train.add_argument("--batch_size", type=int, default=100, help="minibatch size")
    train.add_argument("--epoch", type=int, default=15, help="epochs of centralized training (run_baseline)")
    train.add_argument("--init_lr", type=float, default=5e-5, help="learning rate")
    models = (
        "greyscale (MNIST, Fashion-MNIST): cnn = two 5x5 conv blocks and a linear layer (29k weights), cnn-fedavg = "
        "McMahan et al.'s (1.66M), lenet5, mlp; CIFAR-10: cnn-cifar = NIID-Bench's CNN (62k), resnet20 = He et "
        "al.'s ResNet-20 (270k) with GroupNorm instead of BatchNorm, since batch statistics averaged over non-IID "
        "clients hurt (Hsieh et al. 2020) (default: cnn, or cnn-cifar on CIFAR-10)"
    )
    train.add_argument("--model", default=None, choices=sorted(MODELS), help=models)
    train.add_argument(
        "--optimizer", default="adam", choices=sorted(OPTIMIZERS), help="fresh state for every local job"
    )
    train.add_argument("--seed", type=int, default=0, help="seed of every random choice; same seed, same numbers")
    train.add_argument(
        "--target_acc",
        type=float,
        default=None,
        help="test accuracy (fraction, e.g. 0.85) whose first reaching is reported (time to accuracy)",
    )
    train.add_argument(
        "--no_channels_last",
        action="store_true",
        help="keep conv weights and images in the default NCHW layout (channels-last is faster on CPU)",
    )
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when available")


def _add_federation_flags(parser: argparse.ArgumentParser, track: Track) -> None:
    """Clients and rounds."""
    fed = parser.add_argument_group("federation (federated scripts)")
    track(fed, "--global_epoch", type=int, default=5, help="rounds of FedAvg")
    track(fed, "--local_epoch", type=int, default=5, help="local epochs per client job")
    track(fed, "--num_clients", type=int, default=8, help="clients sharing the training set (split by --partition)")
    track(fed, "--num_select_clients", type=int, default=4, help="clients picked at random each round")
    track(fed, "--drift_correction", default="none", choices=DRIFT_CORRECTIONS,
          help="scaffold: SCAFFOLD's control variates (Karimireddy et al. 2020, option II); fednova: FedNova's "
               "normalized averaging (Wang et al. 2020); both for --optimizer sgd or sgd-momentum, "
               "run_federated only")  # fmt: skip
    track(
        fed,
        "--prox_mu",
        type=float,
        default=0.0,
        help="FedProx: add mu/2 * ||w - w_global||^2 to every local objective (0 = plain local training)",
    )


def _add_partition_flags(parser: argparse.ArgumentParser, track: Track) -> None:
    """How the training set is split among the clients."""
    d = PARTITION_DEFAULTS
    part = parser.add_argument_group(
        "federation: the clients' data (federated scripts; the baseline uses them with --client_test_frac)"
    )
    track(
        part,
        "--partition",
        default=d.kind,
        choices=PARTITIONS,
        help="iid; dirichlet label skew (--dirichlet_alpha); shards (McMahan et al.: sort by label, deal "
        "--shards_per_client shards to each client); classes (each client holds only --classes_per_client labels)",
    )
    track(
        part, "--dirichlet_alpha", type=float, default=d.dirichlet_alpha, help="Dirichlet concentration: small = skewed"
    )
    track(part, "--shards_per_client", type=int, default=d.shards_per_client, help="shards per client (shards)")
    track(part, "--classes_per_client", type=int, default=d.classes_per_client, help="labels per client (classes)")
    track(
        part,
        "--size_skew",
        type=float,
        default=d.size_skew,
        help="quantity skew: client sizes ~ exp(size_skew * N(0,1)); 0 = equal",
    )
    track(part, "--show_partition", action="store_true", help="print every client's size and label histogram")
    part.add_argument(
        "--client_test_frac",
        type=float,
        default=0.0,
        help="hold out this fraction of each client's samples (stratified by label) as its own test set; the "
        "global model is also evaluated on each (per-client accuracy, fairness); the baseline then trains on the "
        "rest of the clients' samples only; 0 = off",
    )


def _add_clock_flags(parser: argparse.ArgumentParser, track: Track) -> None:
    """Client speeds on the simulated clock."""
    clock = parser.add_argument_group("clients' speeds on the simulated clock (federated scripts)")
    track(
        clock,
        "--delay",
        default="none",
        choices=DELAY_MODELS,
        help="client speed model: none, straggler (a fraction is slower), lognormal or uniform slowdowns",
    )
    track(clock, "--client_rate", type=float, default=1000.0, help="samples per simulated second of a normal client")
    track(clock, "--comm_delay", type=float, default=0.0, help="simulated seconds of communication per job")
    track(clock, "--straggler_fraction", type=float, default=0.25, help="share of stragglers (--delay straggler)")
    track(clock, "--straggler_slowdown", type=float, default=10.0, help="how many times slower a straggler is")
    track(
        clock, "--delay_spread", type=float, default=1.0, help="lognormal sigma, or uniform slowdown in [1, 1+spread]"
    )


def _add_comm_flags(parser: argparse.ArgumentParser, track: Track) -> None:
    """What an update costs to send: its encoding, and the clients' links on the simulated clock."""
    comm = parser.add_argument_group("communication: compressed updates, bandwidth on the clock (federated scripts)")
    track(comm, "--compress", default="none", choices=COMPRESSORS,
          help="encode each client's delta: topk (Stich et al. 2018) or qsgd (Alistarh et al. 2017); none: send "
               "the weights as float32")  # fmt: skip
    track(comm, "--compress_ratio", type=float, default=0.01, help="share of the delta's entries topk sends")
    track(comm, "--error_feedback", action="store_true",
          help="topk: keep what each client's encoding dropped and add it to its next delta")  # fmt: skip
    track(comm, "--qsgd_levels", type=int, default=16, help="qsgd's quantization levels s per bucket of 512")
    track(comm, "--uplink_mbps", type=float, default=0.0, help="client upload rate in Mbit/s (0: no limit)")
    track(comm, "--downlink_mbps", type=float, default=0.0, help="client download rate in Mbit/s (0: no limit)")
    track(comm, "--latency", type=float, default=0.0, help="one-way simulated seconds per message (2 per job)")
    track(comm, "--bandwidth", default="fixed", choices=BANDWIDTH_MODELS,
          help="fixed: every client at the rates above; lognormal: each client's rates times "
               "exp(-spread Z)")  # fmt: skip
    track(comm, "--bandwidth_spread", type=float, default=1.0, help="lognormal sigma of --bandwidth lognormal")


def _add_privacy_flags(parser: argparse.ArgumentParser, track: Track) -> None:
    """Client-level differential privacy (DP-FedAvg)."""
    dp = parser.add_argument_group("client-level differential privacy, DP-FedAvg (run_federated)")
    track(dp, "--dp_clip", type=float, default=None,
          help="bound each client's update norm by S and add Gaussian noise to the sum "
               "(McMahan et al. 2018)")  # fmt: skip
    track(dp, "--dp_noise", type=float, default=1.0, help="noise multiplier z: the noise std on the sum is z S")
    track(dp, "--dp_delta", type=float, default=1e-5,
          help="delta of the (epsilon, delta) reported by dp-accounting's RDP accountant")  # fmt: skip


def _add_multi_flags(parser: argparse.ArgumentParser, track: Track) -> None:
    """Several processes (torchrun) and checkpoints."""
    multi = parser.add_argument_group(
        "distributed and checkpoints (federated scripts)",
        "Start with torchrun, e.g. torchrun --standalone --nproc-per-node 3 run_federated.py --distributed: "
        "rank 0 is the server, the other ranks host the clients (round-robin). c10d's rendezvous has no "
        "authentication: run it only inside a trusted network.",
    )
    track(multi, "--distributed", action="store_true", help="run over torch.distributed (gloo) as started by torchrun")
    track(multi, "--workers", type=int, default=1,
          help="local worker processes training clients in parallel in the simulation (federated scripts; the "
               "numbers equal --workers 1's; run_baseline trains in one process)")  # fmt: skip
    track(multi, "--threads_per_worker", type=int, default=None,
          help="torch threads of each process, workers and server (default: the workers share the cores, the "
               "server keeps torch's default); the numbers are the same for any --workers at one value")  # fmt: skip
    track(multi, "--timeout", type=float, default=300.0, help="seconds any wait for another process may last")
    track(multi, "--checkpoint", metavar="PATH", default=None, help="save the server's state here (atomically)")
    track(multi, "--checkpoint_every", type=int, default=1,
          help="rounds (run_federated) or received updates (run_async) between checkpoints")  # fmt: skip
    track(multi, "--resume", metavar="PATH", default=None, help="continue the run saved in this checkpoint")


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    """What the run writes and shows."""
    out = parser.add_argument_group("output")
    out.add_argument("--save", metavar="PATH", default=None, help="write the results JSON here")
    out.add_argument("--no_progress", action="store_true", help="hide the progress bar")


def _add_byzantine_flags(parser: argparse.ArgumentParser, track: Track) -> None:
    group = parser.add_argument_group(
        "Byzantine clients and defences (federated scripts)",
        "Attacks act on updates (client weights minus the model they started from) when the server "
        "aggregates them; alie and ipm see the honest updates of the same round or FedBuff buffer "
        "(omniscient adversary). Checks (shape, dtype, NaN/inf) reject bad updates under every rule.",
    )
    track(
        group,
        "--byzantine",
        type=int,
        default=0,
        metavar="F",
        help="Byzantine clients, chosen by --seed, fixed for the run (with --attack none they behave)",
    )
    track(
        group,
        "--attack",
        default="none",
        choices=ATTACKS,
        help="what the Byzantine clients do: signflip sends -c * update; gaussian sends N(0, sigma^2) noise; "
        "labelflip trains on labels y -> C-1-y; alie ('a little is enough', sees honest updates) sends "
        "mean + z * std of the honest updates per coordinate; ipm (inner-product manipulation, sees honest "
        "updates) sends -eps * their mean",
    )
    track(
        group,
        "--attack_scale",
        type=float,
        default=None,
        help=f"the attack's strength: c for signflip (default {DEFAULT_SCALE['signflip']:g}), sigma for gaussian "
        f"({DEFAULT_SCALE['gaussian']:g}), eps for ipm ({DEFAULT_SCALE['ipm']:g}), "
        "z for alie (default from n and f, Baruch et al. 2019)",
    )
    track(
        group,
        "--gar",
        default="mean",
        choices=RULES,
        help="aggregation rule over a round's updates (run_async: over the FedBuff buffer): mean (FedAvg); "
        "coordinate-wise median; trimmed-mean (--trim per side); krum (n >= 2f+3); multi-krum (--multikrum_m); "
        "bulyan (n >= 4f+3); geomedian (Weiszfeld, --gm_iters)",
    )
    track(group, "--gar_f", type=int, default=None, help="f the rule assumes (default --byzantine)")
    track(group, "--trim", type=int, default=None, help="values trimmed per side by trimmed-mean (default f)")
    track(group, "--multikrum_m", type=int, default=None, help="updates multi-krum averages (default n - f)")
    track(group, "--gm_iters", type=int, default=100, help="most Weiszfeld iterations of geomedian")
    track(
        group,
        "--clip_norm",
        type=float,
        default=None,
        help="bound every update's L2 norm by this (default: no clipping)",
    )


def _add_server_flags(parser: argparse.ArgumentParser, track: Track) -> None:
    d = SERVER_DEFAULTS
    group = parser.add_argument_group("server optimizer (run_federated; run_async --algorithm fedbuff)")
    track(group, "--server_opt", default=d.name, choices=list(SERVER_OPTIMIZERS),
          help="step on the pseudo-gradient D (the combined update): sgd w+eta*D (FedAvg, FedBuff); avgm: FedAvgM "
               "(Hsu et al. 2019); adam, yogi, adagrad: FedAdam, FedYogi, FedAdagrad (Reddi et al. 2021)")  # fmt: skip
    track(group, "--server_lr", type=float, default=None,
          help="server learning rate eta (FedBuff's eta_g); default 1 for sgd and avgm, 0.01 for adam, yogi and "
               "adagrad (Reddi et al. tune it per task)")  # fmt: skip
    track(group, "--server_momentum", type=float, default=d.momentum, help="avgm's beta (Hsu et al. 2019: 0.9)")
    track(group, "--server_b1", type=float, default=d.b1, help="adam/yogi/adagrad first moment decay (Reddi et al.)")
    track(group, "--server_b2", type=float, default=d.b2, help="adam/yogi second moment decay (Reddi et al.)")
    track(group, "--server_tau", type=float, default=d.tau, help="adaptivity tau (Reddi et al.'s experiments: 1e-3)")


def _add_async_flags(parser: argparse.ArgumentParser) -> None:
    d = ASYNC_DEFAULTS
    group = parser.add_argument_group("asynchronous (run_async)")
    group.add_argument(
        "--algorithm",
        default=d.algorithm,
        choices=ALGORITHMS,
        help="fedasync: mix every update in (Xie et al. 2019); fedbuff: step on buffered deltas (Nguyen et al. 2022)",
    )
    group.add_argument(
        "--alpha",
        type=float,
        default=d.alpha,
        help="FedAsync mixing weight alpha (0.6: a value Xie et al. 2019 evaluate)",
    )
    group.add_argument(
        "--staleness",
        default=d.staleness,
        choices=STALENESS_FUNCTIONS,
        help="S(s): constant 1, polynomial (s+1)^-a, hinge; scales FedAsync's alpha and FedBuff's deltas "
        "(polynomial with a=0.5 is FedBuff's 1/sqrt(1+s))",
    )
    group.add_argument(
        "--staleness_a",
        type=float,
        default=None,
        help="a of S(s); default from Xie et al. 2019: 0.5 for polynomial, 10 for hinge",
    )
    group.add_argument("--staleness_b", type=float, default=d.staleness_b, help="b of hinge S(s) (Xie et al. 2019)")
    group.add_argument(
        "--buffer_size", type=int, default=d.buffer_size, help="FedBuff K: deltas per server step (Nguyen et al. 2022)"
    )
    group.add_argument(
        "--concurrency", type=int, default=None, help="clients training at once (default --num_select_clients)"
    )
    group.add_argument(
        "--max_updates",
        type=int,
        default=None,
        help="client updates to receive (default --global_epoch x --num_select_clients: FedAvg's number of local jobs)",
    )
    group.add_argument(
        "--max_staleness", type=int, default=None, help="discard (and count) updates staler than this; default: none"
    )
    group.add_argument(
        "--eval_every",
        type=int,
        default=None,
        help="accepted updates between evaluations (default --num_select_clients)",
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


class _Flags:
    """A read-only view of resolved flag values, by attribute (validation never changes a flag)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("flags are read-only")


def resolve_defaults(flags: Mapping[str, Any], script: str) -> dict[str, Any]:
    """A copy of ``flags`` with the defaults that depend on other flags filled in (``--model`` and ``--augment``
    from ``--dataset``, ``--gar_f`` from ``--byzantine``, ``--server_lr`` from ``--server_opt``; run_async's
    ``--staleness_a``, ``--concurrency``, ``--max_updates``, ``--eval_every``)."""
    resolved = dict(flags)
    colour = resolved["dataset"] in COLOUR_DATASETS
    if resolved.get("model") is None:
        resolved["model"] = "cnn-cifar" if colour else "cnn"
    if resolved.get("augment") is None:
        resolved["augment"] = "crop-flip" if colour else "none"
    if resolved.get("gar_f") is None:
        resolved["gar_f"] = resolved["byzantine"]
    if resolved.get("server_lr") is None:
        resolved["server_lr"] = DEFAULT_SERVER_LR[resolved["server_opt"]]
    if script != "run_async":
        return resolved
    if resolved["staleness_a"] is None:
        resolved["staleness_a"] = DEFAULT_A[resolved["staleness"]]
    _require(
        not (resolved["distributed"] and resolved["concurrency"] is not None),
        "--concurrency: with --distributed every worker process trains one client at a time, "
        "so the number of worker processes sets it",
    )
    defaults = {"concurrency": resolved["num_select_clients"], "eval_every": resolved["num_select_clients"],
                "max_updates": resolved["global_epoch"] * resolved["num_select_clients"]}  # fmt: skip
    for name, value in defaults.items():
        if resolved[name] is None:
            resolved[name] = value
    return resolved


def validate(flags: Mapping[str, Any], script: str) -> None:
    """Check every (resolved) flag value of ``script``; raise UsageError naming the flag on the first bad one."""
    args = _Flags(flags)
    for flag in COUNTS:
        value = flags.get(flag)
        if value is not None:
            _require(1 <= value <= MAX_COUNT, f"--{flag} must be a positive integer up to {MAX_COUNT:.0e}, got {value}")
    _require(
        args.num_select_clients <= args.num_clients,
        f"--num_select_clients ({args.num_select_clients}) cannot exceed --num_clients ({args.num_clients})",
    )
    for flag, valid in RANGES.items():
        value = flags.get(flag)
        if value is not None:
            _require(value in valid, f"--{flag} must be in {valid}, got {value}")
    _validate_model(args)
    if script == "run_async":
        _validate_async(args)
    _validate_drift(args, script)
    _validate_comm(args)
    _validate_privacy(args, script)
    _validate_byzantine(args, script)
    _validate_multi(args, script)
    _validate_data_dir(Path(args.data_dir))
    if args.save is not None:
        _validate_save_path(Path(args.save))


def _validate_model(args: _Flags) -> None:
    """Colour models for CIFAR-10, greyscale ones for the others."""
    if args.dataset in COLOUR_DATASETS:
        _require(args.model in COLOUR_MODELS, f"--model {args.model} takes 28x28 greyscale images; --dataset "
                 f"{args.dataset} needs one of {', '.join(sorted(COLOUR_MODELS))}")  # fmt: skip
    else:
        greyscale = sorted(set(MODELS) - COLOUR_MODELS)
        _require(args.model not in COLOUR_MODELS, f"--model {args.model} takes 32x32 colour images (CIFAR-10); "
                 f"--dataset {args.dataset} needs one of {', '.join(greyscale)}")  # fmt: skip


def _validate_multi(args: _Flags, script: str) -> None:
    """Distributed runs and checkpoints: which script may use them, and with what."""
    baseline = script == "run_baseline"
    for flag in ("distributed", "checkpoint", "resume"):
        _require(not (baseline and getattr(args, flag)), f"--{flag} is for the federated scripts, not run_baseline.py")
    _validate_workers(args)
    if args.checkpoint is not None:
        _validate_save_path(Path(args.checkpoint), "--checkpoint")
    if args.resume is not None:
        _require(Path(args.resume).is_file(), f"--resume {args.resume}: no such file")
    if args.save is not None:
        for flag, other in (("--checkpoint", args.checkpoint), ("--resume", args.resume)):
            _require(
                other is None or not _same_file(args.save, other),
                f"--save {args.save} and {flag} {other} are the same file: the results JSON would overwrite the "
                "checkpoint; give --save another path",
            )


def _validate_workers(args: _Flags) -> None:
    """Parallel workers: a few per core, in the simulation, with per-client state only where checkpoints need none."""
    most = 4 * usable_cores()
    _require(1 <= args.workers <= most,
             f"--workers must be between 1 and {most} (4 per core here), got {args.workers}")  # fmt: skip
    if args.workers == 1:
        return
    _require(
        not args.distributed,
        "--workers runs clients in parallel in the simulation; with --distributed torchrun starts the worker "
        "processes: drop --workers",
    )
    kept = "--drift_correction scaffold" if args.drift_correction == "scaffold" else "--error_feedback"
    _require(
        not ((args.drift_correction == "scaffold" or args.error_feedback) and (args.checkpoint or args.resume)),
        f"{kept} with --workers keeps each client's state on its worker, outside checkpoints: run without "
        "--checkpoint/--resume, or with --workers 1",
    )


def _validate_byzantine(args: _Flags, script: str) -> None:
    """Check the attack and rule flags; the rule's condition on n (updates per aggregation) and f."""
    _require(
        0 <= args.byzantine < args.num_clients,
        f"--byzantine must be between 0 and --num_clients - 1 ({args.num_clients - 1}), got {args.byzantine}",
    )
    # --byzantine F with --attack none: F clients are declared but behave (the attack-free reference)
    _require(args.attack == "none" or args.byzantine > 0, f"--attack {args.attack} needs --byzantine F with F >= 1")
    if args.attack_scale is not None and args.attack in ("signflip", "gaussian", "ipm"):
        _require(args.attack_scale > 0, f"--attack_scale must be positive for {args.attack}, got {args.attack_scale}")
    _require(args.gar_f >= 0, f"--gar_f must be >= 0, got {args.gar_f}")
    if args.trim is not None:
        _require(args.trim >= 0, f"--trim must be >= 0, got {args.trim}")
    rule = RuleConfig(args.gar, args.gar_f, args.trim, args.multikrum_m, args.gm_iters)
    algorithm = args.algorithm if script == "run_async" else None
    if algorithm == "fedasync":
        _require(
            args.gar == "mean",
            f"--gar {args.gar} needs several updates at once, but FedAsync applies each update alone: "
            "use --algorithm fedbuff (the rule replaces the buffer's mean)",
        )
        _require(
            args.attack not in NEEDS_HONEST,
            f"--attack {args.attack} needs the honest updates of a batch, but FedAsync applies each update alone: "
            "use --algorithm fedbuff",
        )
        return
    if algorithm == "fedbuff":
        n, where = args.buffer_size, "--buffer_size"
    else:
        n, where = args.num_select_clients, "--num_select_clients"
    try:
        check_condition(rule, n)
    except ValueError as exc:
        need = min_inputs(rule)
        hint = f"; {where} must be at least {need}" if n < need else ""
        raise UsageError(f"--gar {args.gar}: {exc} (n is {where}){hint}") from None


def _validate_drift(args: _Flags, script: str) -> None:
    """SCAFFOLD and FedNova: synchronous, SGD local training, not with FedProx; SCAFFOLD with the mean only."""
    name = args.drift_correction
    if name == "none":
        return
    _require(script != "run_async", f"--drift_correction {name}: synchronous rounds only (run_federated.py)")
    _require(
        args.optimizer in MOMENTUM,
        f"--drift_correction {name} is defined for SGD local training: use --optimizer sgd or sgd-momentum, "
        f"not {args.optimizer}",
    )
    _require(args.prox_mu == 0, f"--drift_correction {name} with --prox_mu: two corrections of client drift; pick one")
    if name == "scaffold":
        _require(
            not (args.distributed and (args.checkpoint or args.resume)),
            "--drift_correction scaffold with --distributed keeps each client's control variate on its worker, "
            "outside checkpoints: run without --checkpoint/--resume, or simulated",
        )
        _require(
            args.byzantine == 0 and args.gar == "mean",
            "--drift_correction scaffold averages the clients' control variates unguarded, so a robust --gar or "
            "--byzantine clients would protect the model but not the correction every client applies; use --gar mean",
        )


def _validate_comm(args: _Flags) -> None:
    """Compression: error feedback with topk only; what --distributed cannot carry."""
    _require(
        not args.error_feedback or args.compress == "topk",
        f"--error_feedback carries what top-k sparsification drops: use it with --compress topk, not {args.compress}",
    )
    if args.compress == "none":
        return
    _require(
        args.drift_correction != "scaffold",
        f"--compress {args.compress} with --drift_correction scaffold: the control variates' changes would go "
        "uncompressed beside the delta; run SCAFFOLD without --compress",
    )
    _require(
        not (args.error_feedback and args.distributed and (args.checkpoint or args.resume)),
        "--error_feedback with --distributed keeps each client's residual on its worker, outside checkpoints: "
        "run without --checkpoint/--resume, or simulated",
    )


def _validate_privacy(args: _Flags, script: str) -> None:
    """DP-FedAvg: synchronous, the plain mean, no other clipping or drift correction."""
    if args.dp_clip is None:
        return
    _require(script != "run_async", "--dp_clip: client-level DP is accounted for synchronous rounds "
             "(K of N clients sampled without replacement); use run_federated.py")  # fmt: skip
    _require(
        args.gar == "mean",
        f"--dp_clip with --gar {args.gar}: the privacy accounting bounds one client's effect on a sum of clipped "
        "updates; a robust rule's output has another sensitivity. Use --gar mean",
    )
    _require(args.clip_norm is None, "--dp_clip with --clip_norm: DP clips each update itself; drop --clip_norm")
    _require(
        args.drift_correction == "none",
        f"--dp_clip with --drift_correction {args.drift_correction}: its extra state (control variates, step "
        "counts) would reach the server without noise; run DP without it",
    )


def _validate_async(args: _Flags) -> None:
    """Check the asynchronous flags."""
    _require(
        1 <= args.concurrency <= args.num_clients,
        f"--concurrency must be between 1 and --num_clients ({args.num_clients}), got {args.concurrency}",
    )
    if args.max_staleness is not None:
        _require(args.max_staleness >= 0, f"--max_staleness must be >= 0, got {args.max_staleness}")
    _require(
        args.algorithm == "fedbuff" or args.server_opt == "sgd",
        f"--server_opt {args.server_opt}: FedAsync mixes each update in with --alpha and has no server optimizer; "
        "use --algorithm fedbuff",
    )
    if args.algorithm == "fedbuff":
        _require(
            args.buffer_size <= args.max_updates,
            f"--buffer_size ({args.buffer_size}) exceeds --max_updates ({args.max_updates}): FedBuff would never step",
        )


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (after links and ``..``), existing or not."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _validate_data_dir(path: Path) -> None:
    if path.exists():
        _require(path.is_dir(), f"--data_dir {path}: not a directory")
        _require(os.access(path, os.R_OK | os.X_OK), f"--data_dir {path}: not readable")


def _validate_save_path(path: Path, flag: str = "--save") -> None:
    _require(not path.is_dir(), f"{flag} {path}: is a directory, give a file path")
    parent = path.parent if str(path.parent) else Path(".")
    _require(parent.is_dir(), f"{flag} {path}: folder {parent} does not exist")
    _require(os.access(parent, os.W_OK), f"{flag} {path}: folder {parent} is not writable")
