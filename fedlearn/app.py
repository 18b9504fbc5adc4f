"""What every entry script does: flags, data, model, the chosen training loop, tables, JSON."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from . import distributed, seeding, signals
from .asynchronous import AsyncConfig, AsyncServer, run_async
from .centralized import run_centralized
from .checkpoint import Checkpointing, load_checkpoint
from .cli import build_parser, partition_spec, rule_config, validate_args
from .client import LocalJobConfig, LocalTrainer
from .clock import ClientSpeeds, draw_speeds
from .data import Dataset, load_dataset, resolve_dataset
from .distributed_async import run_async_distributed
from .errors import FedlearnError
from .federated import run_fedavg
from .flat import get_flat
from .models import build_model, count_parameters
from .partition import ClientPartition, partition_sizes
from .report import hyperparameter_table, partition_table, results_table, write_results
from .results import RunRecorder
from .runtime import make_deterministic, resolve_device, versions
from .server.attacks import choose_byzantine
from .server.pipeline import RobustAggregator, ServerPipeline, Threat
from .server.steps import build_step


def main(script: str, argv: list[str] | None = None) -> int:
    """Run ``script`` (``run_baseline``, ``run_federated`` or ``run_async``) with ``argv``; returns the exit status."""
    parser = build_parser(script)
    args = parser.parse_args(argv)
    restore_signals, started = signals.install(), time.time()
    try:
        return _run(script, args)
    except FedlearnError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; no results written{_resumable(args, started)}", file=sys.stderr)
        return 130
    except signals.Terminated:
        print(f"{parser.prog}: terminated (SIGTERM); no results written{_resumable(args, started)}", file=sys.stderr)
        return signals.EXIT_TERMINATED
    finally:
        restore_signals()


def _resumable(args: argparse.Namespace, started: float) -> str:
    """A hint to resume, when this run saved a checkpoint."""
    path = Path(args.checkpoint) if getattr(args, "checkpoint", None) else None
    saved = path is not None and path.is_file() and path.stat().st_mtime >= started
    return f"; continue with --resume {path}" if saved else ""


def _notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(script: str, args: argparse.Namespace) -> int:
    validate_args(args, script)
    device = resolve_device(args.device)
    make_deterministic()
    if not args.distributed:
        return _run_process(script, args, device, None)
    rank, world, local_rank = distributed.start(args.timeout)
    try:
        return _run_process(script, args, device, Cluster(rank, world, local_rank))
    finally:
        distributed.stop()


@dataclass(frozen=True)
class Cluster:
    """This process's place in a ``--distributed`` run."""

    rank: int
    world: int
    local_rank: int


def _resolve(args: argparse.Namespace, cluster: Cluster | None) -> tuple[str, str]:
    """The dataset to use; in a distributed run one process per machine fetches it first, the others wait."""
    if cluster is None:
        return resolve_dataset(args.dataset, args.data_dir, download=not args.no_download, notify=_notice)
    quiet = (lambda message: None) if cluster.rank != 0 else _notice
    first = cluster.local_rank == 0
    if first:
        resolved = resolve_dataset(args.dataset, args.data_dir, download=not args.no_download, notify=quiet)
    dist.barrier()
    if not first:
        resolved = resolve_dataset(args.dataset, args.data_dir, download=not args.no_download, notify=quiet)
    return resolved


def _run_process(script: str, args: argparse.Namespace, device: torch.device, cluster: Cluster | None) -> int:
    name, how = _resolve(args, cluster)
    channels_last = not args.no_channels_last
    data = load_dataset(name, args.data_dir).to(device, channels_last)
    torch.manual_seed(seeding.derive_seed(args.seed, seeding.INIT))
    model = build_model(args.model, data.num_classes, channels_last).to(device)

    context: dict[str, Any] = {
        "dataset": name,
        "dataset source": f"{data.source} ({how})",
        "training / test samples": f"{data.train_y.numel()} / {data.test_y.numel()}",
        "normalization (mean, std)": f"{data.mean:.4f}, {data.std:.4f}",
        "test set fingerprint": data.test_fingerprint,
        "model parameters": count_parameters(model),
        "device": str(device),
        "torch threads": torch.get_num_threads(),
    }
    partition: ClientPartition | None = None
    if script != "run_baseline" or args.show_partition:  # the baseline trains on everything
        partition = _make_partition(args, data, context)
    if cluster is not None and cluster.rank != 0:
        return _serve(args, data, partition, cluster)
    if cluster is not None:
        context["processes"] = f"{cluster.world} (server + {cluster.world - 1} workers), torch.distributed gloo"
    prepare, step_name = RUNNERS[script]
    train_run = prepare(args, data, model, partition, context, cluster)
    print(hyperparameter_table(args, context), flush=True)
    if args.show_partition and partition is not None:
        print(partition_table(partition.histograms, partition.skew), flush=True)
    outcome = train_run()
    recorder = outcome.recorder
    final = {**recorder.final(), **outcome.final}
    print(results_table(final, step_name), flush=True)
    if args.save:
        write_results(
            args.save,
            {
                "script": script,
                "args": vars(args),
                "dataset": name,
                "device": str(device),
                "seed": args.seed,
                "final": final,
                "history": recorder.history,
                "run": context,
                **({"partition": partition.summary()} if partition is not None else {}),
                **outcome.document,
                "versions": versions(),
            },
        )
        _notice(f"results written to {args.save}")
    return 0


def _serve(args: argparse.Namespace, data: Dataset, partition: ClientPartition, cluster: Cluster) -> int:
    """A worker process: host its share of the clients until the server says stop."""
    trainer, speeds, _, _ = _setup_clients(args, data, partition, {})
    dim = sum(p.numel() for p in trainer.params)
    distributed.agree_on_setup(cluster.rank, dim, args.num_clients, data.train_y, args.seed)
    emulate = args.delay != "none" or args.comm_delay > 0
    try:
        distributed.serve_clients(trainer, speeds, emulate_delay=emulate)
    except RuntimeError as exc:  # gloo: the server's link broke or stayed silent past --timeout
        reason = distributed.first_line(exc)
        raise distributed.WorkerLost(f"worker rank {cluster.rank} lost the server: {reason}") from None
    return 0


def _server_links(
    args: argparse.Namespace, data: Dataset, dim: int, cluster: Cluster
) -> tuple[distributed.Placement, distributed.Inbox]:
    """The server's side of a distributed run: check the workers set up alike, then listen to each."""
    distributed.agree_on_setup(0, dim, args.num_clients, data.train_y, args.seed)
    placement = distributed.Placement(args.num_clients, cluster.world)
    return placement, distributed.Inbox(placement.workers, dim)


def _checkpoint_setup(
    args: argparse.Namespace, script: str, dim: int, context: dict[str, Any]
) -> tuple[Checkpointing | None, dict[str, Any] | None]:
    """What ``--checkpoint`` and ``--resume`` ask for (``dim``: the model's size); notes a resumption in ``context``."""
    settings = vars(args).copy()
    checkpointing = Checkpointing(args.checkpoint, args.checkpoint_every, settings) if args.checkpoint else None
    resume = load_checkpoint(args.resume, script, settings, dim) if args.resume else None
    if resume is not None:
        done = f"{resume['round']} rounds" if "round" in resume else f"{resume['arrivals']} updates"
        context["resumed from"] = f"{args.resume} (after {done})"
    return checkpointing, resume


def _make_partition(args: argparse.Namespace, data: Dataset, context: dict[str, Any]) -> ClientPartition:
    rng = seeding.numpy_rng(args.seed, seeding.PARTITION)
    partition = ClientPartition.create(partition_spec(args), data.train_y, args.num_clients, rng, data.num_classes)
    sizes = partition_sizes(partition.parts)
    context["partition"] = partition.describe()
    context["client samples (min / max)"] = f"{min(sizes)} / {max(sizes)}"
    context["label skew (mean TV distance, 0 = iid)"] = f"{float(partition.skew.mean()):.3f}"
    return partition


@dataclass
class Outcome:
    """What a training loop hands back: its record, figures for ``final``, and other JSON sections."""

    recorder: RunRecorder
    final: dict[str, Any] = field(default_factory=dict)
    document: dict[str, Any] = field(default_factory=dict)


TrainRun = Callable[[], Outcome]


def _prepare_baseline(
    args: argparse.Namespace,
    data: Dataset,
    model: torch.nn.Module,
    partition: ClientPartition | None,
    context: dict[str, Any],
    cluster: Cluster | None,
) -> TrainRun:
    """Centralized training needs no set-up; returns the training call."""

    def train_run() -> Outcome:
        recorder = run_centralized(
            model,
            data,
            epochs=args.epoch,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            lr=args.init_lr,
            seed=args.seed,
            target_accuracy=args.target_acc,
            show_progress=not args.no_progress,
        )
        return Outcome(recorder)

    return train_run


def _setup_clients(
    args: argparse.Namespace, data: Dataset, partition: ClientPartition, context: dict[str, Any]
) -> tuple[LocalTrainer, ClientSpeeds, Threat, dict[str, Any]]:
    """Draw client speeds and the Byzantine clients and build the local trainer over ``partition``;
    notes both in ``context``."""
    speeds = draw_speeds(
        args.num_clients,
        seeding.numpy_rng(args.seed, seeding.CLOCK),
        delay=args.delay,
        client_rate=args.client_rate,
        comm_delay=args.comm_delay,
        straggler_fraction=args.straggler_fraction,
        straggler_slowdown=args.straggler_slowdown,
        delay_spread=args.delay_spread,
    )
    context["client rates (min / max, samples/s)"] = f"{speeds.rates.min():.1f} / {speeds.rates.max():.1f}"
    config = LocalJobConfig(
        optimizer=args.optimizer,
        lr=args.init_lr,
        batch_size=args.batch_size,
        epochs=args.local_epoch,
        seed=args.seed,
        prox_mu=args.prox_mu,
    )
    threat = Threat(choose_byzantine(args.seed, args.num_clients, args.byzantine), args.attack, args.attack_scale)
    if threat.byzantine:
        context["Byzantine clients"] = ", ".join(map(str, threat.byzantine))
    worker_model = build_model(args.model, data.num_classes, not args.no_channels_last).to(data.train_x.device)
    flipped = frozenset(threat.byzantine) if args.attack == "labelflip" else frozenset()
    trainer = LocalTrainer(worker_model, data, partition.parts, config, label_flip=flipped)
    clients = {
        "sizes": partition_sizes(partition.parts),
        "rates": [float(r) for r in speeds.rates],
        "byzantine": list(threat.byzantine),
    }
    return trainer, speeds, threat, clients


def _aggregator(args: argparse.Namespace, dim: int, threat: Threat) -> RobustAggregator:
    """The server's attack simulation, checks, clipping and rule, as the flags ask."""
    return RobustAggregator(dim, rule_config(args), threat, args.clip_norm, args.seed)


def _prepare_federated(
    args: argparse.Namespace,
    data: Dataset,
    model: torch.nn.Module,
    partition: ClientPartition,
    context: dict[str, Any],
    cluster: Cluster | None,
) -> TrainRun:
    """Set up the clients (here, or on the workers); returns the FedAvg training call."""
    initial = get_flat(model)
    trainer, speeds, threat, clients = _setup_clients(args, data, partition, context)
    aggregator = _aggregator(args, initial.numel(), threat)
    checkpointing, resume = _checkpoint_setup(args, "run_federated", initial.numel(), context)
    rounds: distributed.DistributedRounds | None = None
    if cluster is not None:
        placement, inbox = _server_links(args, data, initial.numel(), cluster)
        rounds = distributed.DistributedRounds(placement, inbox, trainer, args.timeout)

    def train_run() -> Outcome:
        try:
            _, recorder = run_fedavg(
                trainer,
                model,
                initial,
                speeds,
                rounds=args.global_epoch,
                num_select=args.num_select_clients,
                seed=args.seed,
                target_accuracy=args.target_acc,
                show_progress=not args.no_progress,
                pipeline=ServerPipeline(aggregator, build_step("fedavg")),
                execute=rounds,
                checkpointing=checkpointing,
                resume=resume,
            )
        finally:
            if rounds is not None:
                rounds.finish()
        final = aggregator.summary()
        if rounds is not None:
            final["unexpected_updates"] = rounds.unexpected
        return Outcome(recorder, final=final, document={"clients": clients})

    return train_run


def _prepare_async(
    args: argparse.Namespace,
    data: Dataset,
    model: torch.nn.Module,
    partition: ClientPartition,
    context: dict[str, Any],
    cluster: Cluster | None,
) -> TrainRun:
    """Set up the clients (here, or on the workers) and the asynchronous server; returns the training call."""
    initial = get_flat(model)
    trainer, speeds, threat, clients = _setup_clients(args, data, partition, context)
    aggregator = _aggregator(args, initial.numel(), threat)
    config = AsyncConfig(
        algorithm=args.algorithm,
        alpha=args.alpha,
        staleness=args.staleness,
        staleness_a=args.staleness_a,
        staleness_b=args.staleness_b,
        buffer_size=args.buffer_size,
        server_lr=args.server_lr,
        max_staleness=args.max_staleness,
    )
    server = AsyncServer(initial, config, aggregator)
    checkpointing, resume = _checkpoint_setup(args, "run_async", initial.numel(), context)
    if cluster is not None:
        placement, inbox = _server_links(args, data, initial.numel(), cluster)

        def train_distributed() -> Outcome:
            recorder, lost = run_async_distributed(
                server,
                inbox,
                placement,
                trainer,
                model,
                max_updates=args.max_updates,
                eval_every=args.eval_every,
                seed=args.seed,
                timeout_s=args.timeout,
                target_accuracy=args.target_acc,
                show_progress=not args.no_progress,
                checkpointing=checkpointing,
                resume=resume,
            )
            return Outcome(recorder, final={**server.summary(), "lost_workers": lost}, document={"clients": clients})

        return train_distributed

    def train_run() -> Outcome:
        recorder = run_async(
            trainer,
            model,
            server,
            speeds,
            concurrency=args.concurrency,
            max_updates=args.max_updates,
            eval_every=args.eval_every,
            seed=args.seed,
            target_accuracy=args.target_acc,
            show_progress=not args.no_progress,
            checkpointing=checkpointing,
            resume=resume,
        )
        return Outcome(recorder, final=server.summary(), document={"clients": clients})

    return train_run


RUNNERS: dict[str, tuple[Callable[..., TrainRun], str | None]] = {
    "run_baseline": (_prepare_baseline, "Epochs"),
    "run_federated": (_prepare_federated, "Rounds"),
    "run_async": (_prepare_async, None),
}
