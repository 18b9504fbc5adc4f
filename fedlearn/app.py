"""What every entry script does, and the library entry :func:`run`: flags -> configuration -> the run's parts
(:mod:`fedlearn.compose`) -> the script's training loop -> the results document, told to the run's listeners
(tables, progress bar, sinks, results JSON) as it goes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import compose
from .config import RunConfig, Script, build_parser, from_namespace
from .core import signals
from .core.flat import get_flat
from .core.runtime import make_deterministic, resolve_device, versions
from .data import DATASETS, Dataset, arrays
from .data import forget as forget_data
from .data.partitions import ClientPartition
from .data.windows import take
from .distributed.async_server import run_async_distributed
from .distributed.launch import Processes, note_workers, pool_jobs, resolve_data, serve, server_links, with_processes
from .distributed.pool import PooledAsyncJobs, pool_rounds
from .distributed.sync_rounds import DistributedRounds
from .errors import FedlearnError
from .events import Listener, RunStart
from .events.recorder import RunRecorder
from .events.results_file import json_safe
from .loops.centralized import Epochs, run_centralized
from .loops.local_only import run_local_only
from .loops.rounds import Rounds, run_fedavg
from .loops.skeleton import LoopOptions
from .loops.virtual_clock import Updates, run_async
from .models import MODELS
from .models import user as user_model
from .server.asynchronous import AsyncServer
from .server.pipeline import ServerPipeline
from .server.privacy import accountant_used
from .server.scaffold import ServerControl
from .server.synchronous import SyncServer


def main(script: str, argv: list[str] | None = None) -> int:
    """Run ``script`` (``run_baseline``, ``run_federated`` or ``run_async``) with ``argv``; returns the exit status."""
    parser = build_parser(script)
    args = parser.parse_args(argv)
    restore_signals, started = signals.install(), time.time()
    cfg: RunConfig | None = None
    try:
        cfg = from_namespace(args, Script(script))
        execute(cfg)
        return 0
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
        forget_data()
        restore_signals()


def run(script: str, *, dataset: Any = None, model: Any = None, **flags: Any) -> dict[str, Any]:
    """Run what ``script`` (``run_baseline``, ``run_federated``, ``run_async``) would with ``flags`` (the command
    line's flags as keywords: ``global_epoch=3``, ``partition="dirichlet"``, ``no_progress=True``) and return
    its results document, the dictionary ``--save`` would write. Prints what the script prints. Raises
    :class:`~fedlearn.errors.UsageError` for a flag the script would refuse, as the command line does.

    ``dataset``: a dataset's name (as ``--dataset`` takes it) or your arrays, a mapping of ``x_train``,
    ``y_train``, ``x_test``, ``y_test`` (and ``client_train``, ``client_test``: numpy arrays or tensors);
    ``model``: a model's name (as ``--model`` takes it) or your function ``(input_shape=, num_classes=) ->
    nn.Module``. Nothing is kept from one call to the next."""
    with ExitStack() as given:
        if isinstance(dataset, Mapping):
            dataset = given.enter_context(DATASETS.registered(arrays.from_mapping(dataset))).name
        if model is not None and not isinstance(model, str):
            model = given.enter_context(user_model.given(MODELS, model))
        named = {k: v for k, v in (("dataset", dataset), ("model", model)) if v is not None}
        try:
            return execute(compose.config_for(script, **named, **flags))
        finally:
            forget_data()


def _resumable(cfg: RunConfig | None, started: float) -> str:
    """A hint to resume, when this run saved a checkpoint."""
    path = Path(cfg.multi.checkpoint) if cfg is not None and cfg.multi.checkpoint else None
    saved = path is not None and path.is_file() and path.stat().st_mtime >= started
    return f"; continue with --resume {path}" if saved else ""


def execute(cfg: RunConfig) -> dict[str, Any]:
    """Run the configured run in this process (and its workers); returns the results document (empty on a
    ``--distributed`` worker)."""
    device = resolve_device(cfg.training.device)
    make_deterministic()
    if cfg.multi.threads_per_worker is not None:  # every process of the run: the server evaluates with as many
        torch.set_num_threads(cfg.multi.threads_per_worker)
    return with_processes(cfg, partial(_run_process, cfg, device))


@dataclass
class Outcome:
    """What a training loop hands back: its record, figures for ``final``, and other JSON sections."""

    recorder: RunRecorder
    final: dict[str, Any] = field(default_factory=dict)
    document: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    """A run set up: the call that trains it, and what its loop was told."""

    train: Callable[[], Outcome]
    options: LoopOptions


def _run_process(cfg: RunConfig, device: torch.device, procs: Processes) -> dict[str, Any]:
    cluster = procs.cluster
    name, how = resolve_data(cfg, cluster)
    data = compose.load_data(cfg, name, device)
    model = compose.initial_model(cfg, data)
    context = compose.describe(data, name, how, model, device)
    partition = compose.make_partition(cfg, data, context) if compose.needs_partition(cfg, data) else None
    if cluster is not None and cluster.rank != 0:
        serve(cfg, data, partition, cluster)
        return {}
    if cluster is not None:
        context["processes"] = f"{cluster.world} (server + {cluster.world - 1} workers), torch.distributed gloo"
    events = compose.listeners(cfg)
    try:
        prepared = MODES[cfg.script](cfg, data, model, partition, context, procs, events)
        resumed = prepared.options.resume
        history = tuple(resumed["record"]["history"]) if resumed else ()
        events.on_start(RunStart(cfg.script.value, cfg.flags, cfg.given, context, partition, history))
        outcome = prepared.train()
        document = {
            "script": cfg.script.value,
            "args": dict(cfg.flags),
            "dataset": name,
            "device": str(device),
            "seed": cfg.training.seed,
            "final": {**outcome.recorder.final(), **outcome.final},
            "history": outcome.recorder.history,
            "run": context,
            **({"partition": partition.summary()} if partition is not None else {}),
            **({"kept_clients": list(data.kept_clients)} if data.kept_clients is not None else {}),
            **outcome.document,
            "versions": versions(),
        }
        events.on_end(document)
    finally:
        events.close()
    return json_safe(document)


Mode = Callable[[RunConfig, Dataset, nn.Module, ClientPartition | None, dict[str, Any], Processes, Listener], Prepared]


def _baseline(
    cfg: RunConfig, data: Dataset, model: nn.Module, partition: ClientPartition | None, context: dict[str, Any],
    procs: Processes, events: Listener,
) -> Prepared:  # fmt: skip
    """Centralized training on the whole training set, or (``--client_test_frac``) on what the clients keep for
    training."""
    options = compose.loop_options(cfg, data, partition, context, events)
    t = cfg.training
    plan = Epochs(t.epochs, t.batch_size, t.optimizer, t.lr, t.augment)
    if cfg.flags["local_only"]:  # (the checks made sure the clients have their own test sets)
        context["local only"] = f"{len(partition.parts)} clients, each training alone on its own training part"
        return Prepared(lambda: Outcome(run_local_only(model, data, partition.parts, options.client_tests, plan,
                                                       options)), options)  # fmt: skip
    if partition is not None and partition.held_out is not None:
        kept = torch.cat(partition.parts).sort().values.to(data.train_y.device)
        data = replace(data, train_x=take(data.train_x, kept), train_y=data.train_y[kept])
        context["training samples (the clients' training parts)"] = len(kept)
    return Prepared(lambda: Outcome(run_centralized(model, data, plan, options)), options)


def _federated(
    cfg: RunConfig, data: Dataset, model: nn.Module, partition: ClientPartition, context: dict[str, Any],
    procs: Processes, events: Listener,
) -> Prepared:  # fmt: skip
    """FedAvg rounds: the clients (here, or on the workers) and the synchronous server."""
    initial = get_flat(model)
    clients = compose.setup_clients(cfg, data, partition, context, initial)
    trainer, dim = clients.trainer, initial.numel()
    normalize = compose.round_preparation(cfg, trainer)
    control = ServerControl(dim, cfg.federation.num_clients) if trainer.sends_control else None
    if control is not None:
        n = cfg.federation.num_clients
        context["SCAFFOLD control variates"] = (f"one per client that has trained, held where it trains: up to "
                                                f"{n} x {dim:,} float32 ({n * dim * 4 / 2**20:.1f} MiB)")  # fmt: skip
    server = SyncServer(initial, ServerPipeline(*compose.server_parts(cfg, dim, clients.threat), normalize), control,
                        compose.codec(cfg))  # fmt: skip
    dp = compose.privacy(cfg)
    if dp is not None:
        context["client-level DP"] = dp.describe()
    layout = compose.checkpoint_layout(cfg, dim, trainer)
    options = compose.with_personal(compose.loop_options(cfg, data, partition, context, events, layout), trainer)
    cluster = procs.cluster
    rounds = None if cluster is None else DistributedRounds(server_links(cfg, data, trainer, cluster), trainer)
    budget = Rounds(cfg.federation.rounds, cfg.federation.num_select)
    note_workers(cfg, context)

    def train() -> Outcome:
        try:
            with pool_jobs(cfg, data, partition, trainer, procs.pool) as pool:
                execute = pool_rounds(pool) if pool is not None else rounds
                recorder = run_fedavg(trainer, model, server, clients.speeds, budget, options, execute=execute)
        finally:
            if rounds is not None:
                rounds.finish()
        final = {**server.summary(), "server_optimizer": cfg.server_opt.describe(),
                 "drift_correction": cfg.federation.drift_correction, "upload": context["client upload"],
                 **(pool.summary() if pool is not None else {})}  # fmt: skip
        if rounds is not None:
            final["unexpected_updates"] = rounds.unexpected
        if dp is not None:
            last = recorder.history[-1]
            rdp = last["dp_epsilon_rdp"]
            final.update(dp_epsilon=last["dp_epsilon"], dp_epsilon_rdp=rdp, dp_delta=dp.delta,
                         privacy=dp.describe(), dp_accountant=accountant_used(dp.noise, rdp))  # fmt: skip
        return Outcome(recorder, final=final, document={"clients": clients.summary})

    return Prepared(train, options)


def _async(
    cfg: RunConfig, data: Dataset, model: nn.Module, partition: ClientPartition, context: dict[str, Any],
    procs: Processes, events: Listener,
) -> Prepared:  # fmt: skip
    """FedAsync / FedBuff: the clients (here, or on the workers) and the asynchronous server."""
    initial = get_flat(model)
    clients = compose.setup_clients(cfg, data, partition, context, initial)
    trainer, dim = clients.trainer, initial.numel()
    aggregator, step = compose.server_parts(cfg, dim, clients.threat)
    server = AsyncServer(initial, cfg.asynchronous.server, aggregator, step, compose.codec(cfg))
    layout = compose.checkpoint_layout(cfg, dim, trainer)
    options = compose.with_personal(compose.loop_options(cfg, data, partition, context, events, layout), trainer)
    budget = Updates(cfg.asynchronous.max_updates, cfg.asynchronous.eval_every, cfg.asynchronous.concurrency)
    cluster = procs.cluster
    links = None if cluster is None else server_links(cfg, data, trainer, cluster)
    note_workers(cfg, context)

    def train() -> Outcome:
        if links is None:
            with pool_jobs(cfg, data, partition, trainer, procs.pool) as pool:
                jobs = partial(PooledAsyncJobs, pool) if pool is not None else None
                recorder = run_async(trainer, model, server, clients.speeds, budget, options, jobs)
            final = {**server.summary(), **(pool.summary() if pool is not None else {})}
        else:
            recorder, lost = run_async_distributed(server, links, trainer, model, budget, options)
            final = {**server.summary(), "lost_workers": lost}
        if cfg.asynchronous.buffered:
            final["server_optimizer"] = cfg.server_opt.describe()
        final["upload"] = context["client upload"]
        return Outcome(recorder, final=final, document={"clients": clients.summary})

    return Prepared(train, options)


MODES: Mapping[Script, Mode] = {Script.BASELINE: _baseline, Script.FEDERATED: _federated, Script.ASYNC: _async}
"""How each script trains: its loop, and the parts around it."""
