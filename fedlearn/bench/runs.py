"""fedlearn's runs as the benchmark times them, built through :mod:`fedlearn.compose` as the scripts build them
(:mod:`fedlearn.app`): a configuration from the flags, then the partition, the clients, the initial model and the
server's parts. Only the data differ: random tensors (:mod:`.data`), not a dataset read from disk.

The runs are quiet (``--no_progress``, a listener that does nothing) and the figures leave evaluation out.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import compose
from ..config import RunConfig
from ..core.flat import get_flat
from ..data import Dataset
from ..data.partitions import ClientPartition
from ..events import Listener
from ..events.recorder import RunRecorder
from ..loops.centralized import Epochs, run_centralized
from ..loops.rounds import RoundExecutor, Rounds, RoundTask, local_rounds, run_fedavg
from ..loops.skeleton import LoopOptions
from ..server.pipeline import ServerPipeline
from ..server.scaffold import ServerControl
from ..server.synchronous import SyncServer
from .data import BATCH_SIZE, LR, plain_jobs_seconds


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: the kernel's high-water mark of its address space (VmHWM), which
    starts anew at exec. (``getrusage``'s ``ru_maxrss`` does not: a child started by a large parent reports at
    least the parent's size when it forked.) Falls back to ``ru_maxrss`` where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


TRAINING = {"optimizer": "adam", "init_lr": LR, "batch_size": BATCH_SIZE, "no_progress": True}
"""Every timed run's flags: Adam, lr 1e-3, batch 100, quiet (the model is the scripts' default: cnn, channels-last)."""
FEDERATED = {**TRAINING, "local_epoch": 1, "dirichlet_alpha": 0.5}
"""A federated run's flags besides: 1 local epoch, Dirichlet(0.5) when ``--partition dirichlet`` (the clients'
speeds are the defaults', ``--delay none --client_rate 1000``: 1,000 samples/s each)."""


def config_for(script: str, **flags: Any) -> RunConfig:
    """The configuration of ``script`` with the benchmark's flags (:data:`TRAINING`, or :data:`FEDERATED` for a
    federated script), ``flags`` over them."""
    base = TRAINING if script == "run_baseline" else FEDERATED
    return compose.config_for(script, **{**base, **flags})


def quiet_options(cfg: RunConfig, data: Dataset, partition: ClientPartition | None = None) -> LoopOptions:
    """The loop's options as the scripts build them, told to a listener that does nothing."""
    return compose.loop_options(cfg, data, partition, {}, Listener())


def non_eval_seconds(final: dict[str, Any]) -> float:
    """A run's wall-clock seconds less those its evaluations took."""
    return final["wall_time_s"] - final["time_breakdown_s"]["evaluation"]


def baseline_seconds(data: Dataset, seed: int = 0, **flags: Any) -> float:
    """One epoch of fedlearn's centralized training (evaluation excluded); ``flags``: run_baseline's, e.g. the
    model and ``--augment``."""
    cfg = config_for("run_baseline", epoch=1, seed=seed, **flags)
    model = compose.initial_model(cfg, data)
    t = cfg.training
    plan = Epochs(t.epochs, t.batch_size, t.optimizer, t.lr, t.augment)  # as app's baseline mode
    return non_eval_seconds(run_centralized(model, data, plan, quiet_options(cfg, data)).final())


@dataclass(frozen=True)
class Federated:
    """A FedAvg run set up as run_federated sets it up in one process (no workers, no DP, no checkpoints)."""

    cfg: RunConfig
    partition: ClientPartition
    clients: compose.Clients
    model: nn.Module
    server: SyncServer
    options: LoopOptions

    def run(self, execute: RoundExecutor | None = None) -> RunRecorder:
        """Train the configured rounds (``execute``: where the picked clients train; default here)."""
        federation = self.cfg.federation
        budget = Rounds(federation.rounds, federation.num_select)
        return run_fedavg(self.clients.trainer, self.model, self.server, self.clients.speeds, budget, self.options,
                          execute)  # fmt: skip


def federated(cfg: RunConfig, data: Dataset) -> Federated:
    """The parts of a run_federated run of ``cfg`` on ``data``, wired as app's federated mode wires them."""
    model = compose.initial_model(cfg, data)
    partition = compose.make_partition(cfg, data, {})
    clients = compose.setup_clients(cfg, data, partition, {})
    initial = get_flat(model)
    trainer, dim = clients.trainer, initial.numel()
    normalize = compose.round_preparation(cfg, trainer)
    control = ServerControl(dim, cfg.federation.num_clients) if trainer.sends_control else None
    pipeline = ServerPipeline(*compose.server_parts(cfg, dim, clients.threat), normalize)
    server = SyncServer(initial, pipeline, control, compose.codec(cfg))
    return Federated(cfg, partition, clients, model, server, quiet_options(cfg, data, partition))


def fedavg_run(
    data: Dataset,
    num_clients: int,
    picked: int,
    rounds: int,
    partition: str = "iid",
    seed: int = 0,
    plain_reference: bool = False,
) -> dict[str, Any]:
    """A FedAvg run; returns its ``final`` figures (with the time breakdown) and its history.

    With ``plain_reference``, next to each round's local training (before it in even
    rounds, after it in odd ones) the plain loop trains the very same client jobs
    (fresh Adam each, the clients' own samples in batches); ``paired`` holds (fedlearn's training
    seconds, the plain loop's seconds, the reference's wall seconds) per round, and the reference's time is taken back
    out of the round's ``training`` section.
    """
    cfg = config_for("run_federated", num_clients=num_clients, num_select_clients=picked, global_epoch=rounds,
                     partition=partition, seed=seed)  # fmt: skip
    run = federated(cfg, data)
    trainer = run.clients.trainer
    local = local_rounds(trainer)
    paired: list[tuple[float, float, float]] = []
    shuffle = torch.Generator().manual_seed(seed + 1)

    # The bench's own executor: the rounds train in-process as the scripts' (local_rounds), with the plain loop
    # timed on the same jobs beside each round; its time is taken out of the figures below.
    def with_reference(task: RoundTask, progress: Any) -> Any:
        parts, round_index = trainer.partitions, task.round_index
        jobs = [list(parts[c][torch.randperm(parts[c].numel(), generator=shuffle)].split(BATCH_SIZE))
                for c in task.picked]  # fmt: skip

        def reference() -> tuple[float, float]:
            began = time.perf_counter()
            return plain_jobs_seconds(data, jobs, seed, channels_last=True), time.perf_counter() - began

        # the second of the two trains on samples the first left in the CPU caches: take turns going first
        if round_index % 2 == 0:
            plain, extra = reference()
        began = time.perf_counter()
        results = local(task, progress)
        trained = time.perf_counter() - began
        if round_index % 2 == 1:
            plain, extra = reference()
        paired.append((trained, plain, extra))
        return results

    recorder = run.run(with_reference if plain_reference else None)
    history, final = recorder.history, recorder.final()
    extra_so_far = 0.0
    for entry, (_, _, extra) in zip(history, paired):  # cumulative sections: take the reference out
        extra_so_far += extra
        entry["time_breakdown_s"]["training"] -= extra_so_far
    final["time_breakdown_s"]["training"] -= extra_so_far
    final["wall_time_s"] -= extra_so_far
    return {"final": final, "history": history, "partitions": trainer.partitions, "paired": paired}
