"""What every entry script does: flags, data, model, the chosen training loop, tables, JSON."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .client import LocalJobConfig, LocalTrainer
from .client.uplink import Uplink
from .comm.clock import ClientSpeeds, draw_links, draw_speeds
from .comm.codecs import Codec, build_codec, describe_upload, job_bytes
from .config import RunConfig, Script, from_namespace
from .config.cli import build_parser
from .core import seeding, signals
from .core.checkpoint import Checkpointing, load_checkpoint
from .core.flat import get_flat
from .core.runtime import make_deterministic, resolve_device, usable_cores, versions
from .core.training import MOMENTUM, ClientTests
from .data import Dataset, load_dataset, resolve_dataset
from .data.partitions import ClientPartition, partition_sizes
from .distributed.async_server import run_async_distributed
from .distributed.cluster import (
    Placement,
    WorkerLost,
    agree_on_setup,
    first_line,
    join_process_group,
    leave_process_group,
)
from .distributed.inbox import Inbox, Links
from .distributed.pool import PooledAsyncJobs, PoolJobs, PoolSpec, WorkerPool, pool_rounds
from .distributed.sync_rounds import DistributedRounds
from .distributed.worker import serve_clients
from .errors import FedlearnError
from .events.console import hyperparameter_table, partition_table, results_table, write_results
from .events.recorder import RunRecorder
from .loops.centralized import Epochs, run_centralized
from .loops.rounds import Rounds, run_fedavg
from .loops.skeleton import LoopOptions
from .loops.virtual_clock import Updates, run_async
from .models import build_model, count_parameters
from .server.asynchronous import AsyncServer
from .server.attacks import choose_byzantine
from .server.fednova import FedNova
from .server.pipeline import RobustAggregator, ServerPipeline, Threat
from .server.privacy import Accountant, GaussianSum, PrivacyConfig
from .server.scaffold import ServerControl
from .server.steps import ServerStep, build_step
from .server.synchronous import SyncServer


def main(script: str, argv: list[str] | None = None) -> int:
    """Run ``script`` (``run_baseline``, ``run_federated`` or ``run_async``) with ``argv``; returns the exit status."""
    parser = build_parser(script)
    args = parser.parse_args(argv)
    restore_signals, started = signals.install(), time.time()
    cfg: RunConfig | None = None
    try:
        cfg = from_namespace(args, Script(script))
        return _run(cfg)
    except FedlearnError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; no results written{_resumable(cfg, started)}", file=sys.stderr)
        return 130
    except signals.Terminated:
        print(f"{parser.prog}: terminated (SIGTERM); no results written{_resumable(cfg, started)}", file=sys.stderr)
        return signals.EXIT_TERMINATED
    finally:
        restore_signals()


def _resumable(cfg: RunConfig | None, started: float) -> str:
    """A hint to resume, when this run saved a checkpoint."""
    path = Path(cfg.multi.checkpoint) if cfg is not None and cfg.multi.checkpoint else None
    saved = path is not None and path.is_file() and path.stat().st_mtime >= started
    return f"; continue with --resume {path}" if saved else ""


def _notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(cfg: RunConfig) -> int:
    device = resolve_device(cfg.training.device)
    make_deterministic()
    if cfg.multi.threads_per_worker is not None:  # every process of the run: the server evaluates with as many
        torch.set_num_threads(cfg.multi.threads_per_worker)
    if not cfg.multi.distributed:
        pool = _spawn_workers(cfg)  # first: they start up while this process loads the data
        try:
            return _run_process(cfg, device, Processes(pool=pool))
        finally:
            if pool is not None:
                pool.kill()  # after a clean close, only what is left of processes that said BYE
    rank, world, local_rank = join_process_group(cfg.multi.timeout)
    try:
        return _run_process(cfg, device, Processes(cluster=Cluster(rank, world, local_rank)))
    finally:
        leave_process_group()


@dataclass(frozen=True)
class Cluster:
    """This process's place in a ``--distributed`` run."""

    rank: int
    world: int
    local_rank: int


@dataclass(frozen=True)
class Processes:
    """The run's other processes: torchrun's (``--distributed``) or this process's workers (``--workers``)."""

    cluster: Cluster | None = None
    pool: WorkerPool | None = None


def _spawn_workers(cfg: RunConfig) -> WorkerPool | None:
    """The worker processes ``--workers`` asks for in a federated simulation (None: clients train here)."""
    if cfg.multi.workers == 1 or cfg.script is Script.BASELINE:
        return None
    return WorkerPool(PoolSpec(cfg.multi.workers, _worker_threads(cfg), cfg.multi.timeout))


def _resolve(cfg: RunConfig, cluster: Cluster | None) -> tuple[str, str]:
    """The dataset to use; in a distributed run one process per machine fetches it first, the others wait."""
    if cluster is None:
        return resolve_dataset(cfg.data.dataset, cfg.data.data_dir, download=cfg.data.download, notify=_notice)
    quiet = (lambda message: None) if cluster.rank != 0 else _notice
    first = cluster.local_rank == 0
    if first:
        resolved = resolve_dataset(cfg.data.dataset, cfg.data.data_dir, download=cfg.data.download, notify=quiet)
    dist.barrier()
    if not first:
        resolved = resolve_dataset(cfg.data.dataset, cfg.data.data_dir, download=cfg.data.download, notify=quiet)
    return resolved


def _run_process(cfg: RunConfig, device: torch.device, procs: Processes) -> int:
    cluster = procs.cluster
    name, how = _resolve(cfg, cluster)
    channels_last = cfg.training.channels_last
    data = load_dataset(name, cfg.data.data_dir).to(device, channels_last)
    torch.manual_seed(seeding.derive_seed(cfg.training.seed, seeding.INIT))
    model = build_model(cfg.training.model, data.num_classes, channels_last).to(device)

    context: dict[str, Any] = {
        "dataset": name,
        "dataset source": f"{data.source} ({how})",
        "training / test samples": f"{data.train_y.numel()} / {data.test_y.numel()}",
        "normalization (mean, std)": data.describe_normalization(),
        "test set fingerprint": data.test_fingerprint,
        "model parameters": count_parameters(model),
        "device": str(device),
        "torch threads": torch.get_num_threads(),
    }
    partition: ClientPartition | None = None
    federation = cfg.federation
    if cfg.script is not Script.BASELINE or federation.show_partition or federation.client_test_frac > 0:
        partition = _make_partition(cfg, data, context)
    if cluster is not None and cluster.rank != 0:
        return _serve(cfg, data, partition, cluster)
    if cluster is not None:
        context["processes"] = f"{cluster.world} (server + {cluster.world - 1} workers), torch.distributed gloo"
    prepare, step_name = RUNNERS[cfg.script]
    train_run = prepare(cfg, data, model, partition, context, procs)
    print(hyperparameter_table(cfg.flags, context), flush=True)
    if cfg.federation.show_partition and partition is not None:
        print(partition_table(partition.histograms, partition.skew), flush=True)
    outcome = train_run()
    recorder = outcome.recorder
    final = {**recorder.final(), **outcome.final}
    print(results_table(final, step_name), flush=True)
    if cfg.output.save:
        write_results(
            cfg.output.save,
            {
                "script": cfg.script.value,
                "args": dict(cfg.flags),
                "dataset": name,
                "device": str(device),
                "seed": cfg.training.seed,
                "final": final,
                "history": recorder.history,
                "run": context,
                **({"partition": partition.summary()} if partition is not None else {}),
                **outcome.document,
                "versions": versions(),
            },
        )
        _notice(f"results written to {cfg.output.save}")
    return 0


def _serve(cfg: RunConfig, data: Dataset, partition: ClientPartition, cluster: Cluster) -> int:
    """A worker process: host its share of the clients until the server says stop."""
    trainer, speeds, _, _ = _setup_clients(cfg, data, partition, {})
    dim = sum(p.numel() for p in trainer.params)
    agree_on_setup(cluster.rank, dim, cfg.federation.num_clients, data.train_y, cfg.training.seed)
    emulate = cfg.clock.delay != "none" or cfg.clock.comm_delay > 0 or cfg.clock.limits_links
    try:
        serve_clients(trainer, speeds, emulate_delay=emulate)
    except RuntimeError as exc:  # gloo: the server's link broke or stayed silent past --timeout
        reason = first_line(exc)
        raise WorkerLost(f"worker rank {cluster.rank} lost the server: {reason}") from None
    return 0


def _server_links(cfg: RunConfig, data: Dataset, dim: int, cluster: Cluster) -> Links:
    """The server's side of a distributed run: check the workers set up alike, then listen to each."""
    agree_on_setup(0, dim, cfg.federation.num_clients, data.train_y, cfg.training.seed)
    placement = Placement(cfg.federation.num_clients, cluster.world)
    payload = 2 * dim if cfg.federation.drift_correction == "scaffold" else dim  # weights, then delta c_i
    return Links(placement, Inbox(placement.workers, payload), cfg.multi.timeout)


def _loop_options(
    cfg: RunConfig, data: Dataset, partition: ClientPartition | None, context: dict[str, Any], dim: int = 0
) -> LoopOptions:
    """What every loop is told: seed, target, progress bar, the clients' test sets (from ``partition``), and
    what ``--checkpoint`` and ``--resume`` ask for (``dim``: the model's size); notes a resumption in
    ``context``."""
    settings, script = dict(cfg.flags), cfg.script.value
    multi = cfg.multi
    checkpointing = (
        Checkpointing(multi.checkpoint, multi.checkpoint_every, settings, script) if multi.checkpoint else None
    )
    resume = load_checkpoint(multi.resume, script, settings, dim) if multi.resume else None
    if resume is not None:
        done = f"{resume['round']} rounds" if "round" in resume else f"{resume['arrivals']} updates"
        context["resumed from"] = f"{multi.resume} (after {done})"
    held_out = partition.held_out if partition is not None else None
    tests = None if held_out is None else ClientTests.gather(data.train_x, data.train_y, held_out)
    t = cfg.training
    return LoopOptions(t.seed, t.target_accuracy, cfg.output.progress, checkpointing, resume, tests)


def _make_partition(cfg: RunConfig, data: Dataset, context: dict[str, Any]) -> ClientPartition:
    rng = seeding.numpy_rng(cfg.training.seed, seeding.PARTITION)
    partition = ClientPartition.create(
        cfg.federation.partition, data.train_y, cfg.federation.num_clients, rng, data.num_classes
    )
    fraction = cfg.federation.client_test_frac
    if fraction > 0:
        partition = partition.holding_out(
            fraction, data.train_y, seeding.numpy_rng(cfg.training.seed, seeding.HOLD_OUT)
        )
        held = sum(partition_sizes(partition.held_out))
        context["client test sets"] = f"{fraction:g} of each client's samples, stratified ({held} in all)"
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
    cfg: RunConfig,
    data: Dataset,
    model: torch.nn.Module,
    partition: ClientPartition | None,
    context: dict[str, Any],
    procs: Processes,
) -> TrainRun:
    """Centralized training on the whole training set, or (``--client_test_frac``) on what the clients keep for
    training; returns the training call."""
    options = _loop_options(cfg, data, partition, context)
    if options.client_tests is not None:
        kept = torch.cat(partition.parts).sort().values.to(data.train_y.device)
        data = replace(data, train_x=data.train_x[kept], train_y=data.train_y[kept])
        context["training samples (the clients' training parts)"] = len(kept)

    def train_run() -> Outcome:
        t = cfg.training
        plan = Epochs(t.epochs, t.batch_size, t.optimizer, t.lr, t.augment)
        recorder = run_centralized(model, data, plan, options)
        return Outcome(recorder)

    return train_run


def _setup_clients(
    cfg: RunConfig, data: Dataset, partition: ClientPartition, context: dict[str, Any]
) -> tuple[LocalTrainer, ClientSpeeds, Threat, dict[str, Any]]:
    """Draw the Byzantine clients, build the local trainer over ``partition``, draw client speeds and links;
    notes them in ``context``."""
    config = LocalJobConfig(
        optimizer=cfg.training.optimizer,
        lr=cfg.training.lr,
        batch_size=cfg.training.batch_size,
        epochs=cfg.federation.local_epochs,
        seed=cfg.training.seed,
        prox_mu=cfg.federation.prox_mu,
        drift_correction=cfg.federation.drift_correction,
        augment=cfg.training.augment,
    )
    threat = Threat(
        choose_byzantine(cfg.training.seed, cfg.federation.num_clients, cfg.threat.byzantine),
        cfg.threat.attack,
        cfg.threat.attack_scale,
    )
    if threat.byzantine:
        context["Byzantine clients"] = ", ".join(map(str, threat.byzantine))
    worker_model = build_model(cfg.training.model, data.num_classes, cfg.training.channels_last).to(data.train_x.device)
    flipped = frozenset(threat.byzantine) if cfg.threat.attack == "labelflip" else frozenset()
    codec, dim = _codec(cfg), count_parameters(worker_model)
    uplink = Uplink(codec, cfg.comm.error_feedback, cfg.training.seed)
    trainer = LocalTrainer(worker_model, data, partition.parts, config, label_flip=flipped, uplink=uplink)
    context["client upload"] = describe_upload(codec, dim, cfg.comm.error_feedback)
    speeds = _client_speeds(cfg, job_bytes(dim, codec, trainer.sends_control), context)
    clients = {
        "sizes": partition_sizes(partition.parts),
        "rates": [float(r) for r in speeds.rates],
        "byzantine": list(threat.byzantine),
    }
    if speeds.links is not None:
        clients["downlink_mbps"] = [float(r) / 1e6 for r in speeds.links.down_bps]  # inf (null): no limit
        clients["uplink_mbps"] = [float(r) / 1e6 for r in speeds.links.up_bps]
    return trainer, speeds, threat, clients


def _client_speeds(cfg: RunConfig, sizes: tuple[int, int], context: dict[str, Any]) -> ClientSpeeds:
    """Every client's training rate and, when sending takes time, its link (each drawn once from the seed; a
    job moves ``sizes`` bytes down and up)."""
    n, seed = cfg.federation.num_clients, cfg.training.seed
    speeds = draw_speeds(n, seeding.numpy_rng(seed, seeding.CLOCK), cfg.clock)
    context["client rates (min / max, samples/s)"] = f"{speeds.rates.min():.1f} / {speeds.rates.max():.1f}"
    links = draw_links(n, seeding.numpy_rng(seed, seeding.BANDWIDTH), cfg.clock, sizes)
    if links is None:
        return speeds
    transfer = [links.transfer_seconds(c) for c in range(n)]
    context["client transfer per job (min / max, simulated s)"] = f"{min(transfer):.3f} / {max(transfer):.3f}"
    return replace(speeds, links=links)


def _codec(cfg: RunConfig) -> Codec | None:
    """How clients encode their updates (None: they send their weights)."""
    return build_codec(cfg.comm.compress, cfg.comm.ratio, cfg.comm.qsgd_levels)


def _privacy(cfg: RunConfig) -> PrivacyConfig | None:
    """DP-FedAvg's settings, when ``--dp_clip`` asks for it."""
    p, fed = cfg.privacy, cfg.federation
    return None if p.clip is None else PrivacyConfig(p.clip, p.noise, p.delta, fed.num_select, fed.num_clients)


def _server_parts(cfg: RunConfig, dim: int, threat: Threat) -> tuple[RobustAggregator, ServerStep]:
    """The server's parts as the configuration asks (the one place they are built): attack simulation,
    checks, clipping and rule (the aggregator; DP's noisy sum in the rule's place), then the server step."""
    privacy = _privacy(cfg)
    noisy = GaussianSum(privacy, cfg.training.seed) if privacy is not None else None
    aggregator = RobustAggregator(dim, cfg.threat.rule, threat, cfg.threat.clip_norm, cfg.training.seed, noisy)
    if cfg.asynchronous is None:
        return aggregator, build_step(optimizer=cfg.server_opt)
    server = cfg.asynchronous.server
    return aggregator, build_step(server.algorithm, cfg.server_opt, server.alpha)


def _prepare_federated(
    cfg: RunConfig,
    data: Dataset,
    model: torch.nn.Module,
    partition: ClientPartition,
    context: dict[str, Any],
    procs: Processes,
) -> TrainRun:
    """Set up the clients (here, or on the workers) and the server; returns the FedAvg training call."""
    initial = get_flat(model)
    trainer, speeds, threat, clients = _setup_clients(cfg, data, partition, context)
    fednova = cfg.federation.drift_correction == "fednova"
    normalize = FedNova(trainer.num_batches, MOMENTUM[cfg.training.optimizer]) if fednova else None
    control = ServerControl(initial.numel(), cfg.federation.num_clients) if trainer.sends_control else None
    if control is not None:
        n, dim = cfg.federation.num_clients, initial.numel()
        context["SCAFFOLD control variates"] = (f"one per client that has trained, held where it trains: up to "
                                                f"{n} x {dim:,} float32 ({n * dim * 4 / 2**20:.1f} MiB)")  # fmt: skip
    pipeline = ServerPipeline(*_server_parts(cfg, initial.numel(), threat), normalize)
    server = SyncServer(initial, pipeline, control, _codec(cfg))
    privacy = _privacy(cfg)
    if privacy is not None:
        context["client-level DP"] = privacy.describe()
    options = _loop_options(cfg, data, partition, context, initial.numel())
    cluster = procs.cluster
    rounds = None if cluster is None else DistributedRounds(_server_links(cfg, data, initial.numel(), cluster), trainer)
    budget = Rounds(cfg.federation.rounds, cfg.federation.num_select)
    _note_workers(cfg, context)

    def train_run() -> Outcome:
        try:
            with _pool_jobs(cfg, data, partition, trainer, procs.pool) as pool:
                execute = pool_rounds(pool) if pool is not None else rounds
                recorder = run_fedavg(trainer, model, server, speeds, budget, options, execute=execute)
        finally:
            if rounds is not None:
                rounds.finish()
        final = {**server.summary(), "server_optimizer": cfg.server_opt.describe(),
                 "drift_correction": cfg.federation.drift_correction, "upload": context["client upload"],
                 **(pool.summary() if pool is not None else {})}  # fmt: skip
        if rounds is not None:
            final["unexpected_updates"] = rounds.unexpected
        if privacy is not None:
            final.update(_account(privacy, recorder))
        return Outcome(recorder, final=final, document={"clients": clients})

    return train_run


def _prepare_async(
    cfg: RunConfig,
    data: Dataset,
    model: torch.nn.Module,
    partition: ClientPartition,
    context: dict[str, Any],
    procs: Processes,
) -> TrainRun:
    """Set up the clients (here, or on the workers) and the asynchronous server; returns the training call."""
    initial = get_flat(model)
    trainer, speeds, threat, clients = _setup_clients(cfg, data, partition, context)
    aggregator, step = _server_parts(cfg, initial.numel(), threat)
    server = AsyncServer(initial, cfg.asynchronous.server, aggregator, step, _codec(cfg))
    options = _loop_options(cfg, data, partition, context, initial.numel())
    budget = Updates(cfg.asynchronous.max_updates, cfg.asynchronous.eval_every, cfg.asynchronous.concurrency)
    cluster = procs.cluster
    links = None if cluster is None else _server_links(cfg, data, initial.numel(), cluster)
    _note_workers(cfg, context)

    def train_run() -> Outcome:
        if links is None:
            with _pool_jobs(cfg, data, partition, trainer, procs.pool) as pool:
                jobs = partial(PooledAsyncJobs, pool) if pool is not None else None
                recorder = run_async(trainer, model, server, speeds, budget, options, jobs)
            final = {**server.summary(), **(pool.summary() if pool is not None else {})}
        else:
            recorder, lost = run_async_distributed(server, links, trainer, model, budget, options)
            final = {**server.summary(), "lost_workers": lost}
        if cfg.asynchronous.server.algorithm == "fedbuff":
            final["server_optimizer"] = cfg.server_opt.describe()
        final["upload"] = context["client upload"]
        return Outcome(recorder, final=final, document={"clients": clients})

    return train_run


def _worker_threads(cfg: RunConfig) -> int:
    """Torch threads per worker process: as asked, else the cores shared out."""
    return cfg.multi.threads_per_worker or max(1, usable_cores() // cfg.multi.workers)


def _note_workers(cfg: RunConfig, context: dict[str, Any]) -> None:
    """Say in the Hyperparameters how the clients train, when --workers asks for processes."""
    if cfg.multi.workers > 1 and not cfg.multi.distributed:
        context["workers"] = (f"{cfg.multi.workers} processes x {_worker_threads(cfg)} torch threads "
                              "(training data in shared memory)")  # fmt: skip


@contextmanager
def _pool_jobs(
    cfg: RunConfig, data: Dataset, partition: ClientPartition, trainer: LocalTrainer, pool: WorkerPool | None
) -> Iterator[PoolJobs | None]:
    """Hand the workers their clients (the training data through shared memory) and stop them at the end; None
    without workers."""
    if pool is None:
        yield None
        return
    pool.start(partial(_pool_clients, replace(cfg, flags=dict(cfg.flags)), data.shared_for_training(), partition),
               trainer)  # fmt: skip
    pinned = trainer.sends_control or cfg.comm.error_feedback  # per-client state lives on one worker
    yield PoolJobs(pool, trainer, pinned, with_control=trainer.sends_control)
    pool.close()


def _pool_clients(cfg: RunConfig, data: Dataset, partition: ClientPartition) -> tuple[LocalTrainer, ClientSpeeds]:
    """A pool worker's trainer (built in the worker from the shared data)."""
    trainer, speeds, _, _ = _setup_clients(cfg, data, partition, {})
    return trainer, speeds


def _account(privacy: PrivacyConfig, recorder: RunRecorder) -> dict[str, Any]:
    """The privacy loss after each evaluated round (into the history) and at the end (returned for ``final``)."""
    accountant = Accountant(privacy)
    for entry in recorder.history:
        entry["dp_epsilon"] = accountant.epsilon(entry["step"])
    return {"dp_epsilon": recorder.history[-1]["dp_epsilon"], "dp_delta": privacy.delta,
            "privacy": privacy.describe()}  # fmt: skip


RUNNERS: dict[Script, tuple[Callable[..., TrainRun], str | None]] = {
    Script.BASELINE: (_prepare_baseline, "Epochs"),
    Script.FEDERATED: (_prepare_federated, "Rounds"),
    Script.ASYNC: (_prepare_async, None),
}
