"""The benchmark's workers section: FedAvg rounds with the clients trained by 1, 2, ... worker processes.

Each row is one process running the loop ``--workers N`` runs (the fork server,
the shared training data, the jobs over loopback gloo), with the cores shared
out as the scripts do by default: ``cores // N`` torch threads per worker, all of
them with one worker (in-process, as ``--workers 1``). Local training is 1 epoch
of SGD, batch 100, 10 % of the clients per round (at least 4); the figure is
samples trained per second of round time, evaluation excluded, over rounds 2
onwards (round 1 is the warm-up: kernels are built there).
"""

from __future__ import annotations

import resource
import statistics
from functools import partial
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

from ..client import LocalJobConfig, LocalTrainer
from ..comm.clock import ClientSpeeds
from ..core import seeding
from ..core.flat import get_flat
from ..core.runtime import make_deterministic, usable_cores
from ..data import Dataset
from ..data.partitions import PartitionSpec, make_partition
from ..distributed.pool import PoolJobs, PoolSpec, WorkerPool, pool_rounds
from ..loops.rounds import Rounds, run_fedavg
from ..loops.skeleton import LoopOptions
from ..models import build_model
from ..server.synchronous import SyncServer

JOB = LocalJobConfig(optimizer="sgd", lr=0.01, batch_size=100, epochs=1, seed=0)


def _clients(data: Dataset, parts: list[torch.Tensor]) -> tuple[LocalTrainer, ClientSpeeds]:
    """A trainer over the clients (in a worker: built from the shared data)."""
    return LocalTrainer(build_model("cnn", channels_last=True), data, parts, JOB), ClientSpeeds(
        np.full(len(parts), 1e3)
    )


def workers_child(config: dict[str, Any]) -> dict[str, Any]:
    """One FedAvg run with ``config["workers"]`` worker processes; returns its per-round figures."""
    from . import synthetic_dataset  # the benchmark's data, shared with its other sections

    workers, threads = config["workers"], config["threads"]
    torch.set_num_threads(threads)
    make_deterministic()
    pool = WorkerPool(PoolSpec(workers, threads, 300.0)) if workers > 1 else None
    data = synthetic_dataset(config["num_train"], config["num_test"]).to(torch.device("cpu"), channels_last=True)
    n, picked = config["clients"], config["picked"]
    parts = make_partition(PartitionSpec("iid"), data.train_y, n, seeding.numpy_rng(0, seeding.PARTITION))
    trainer, speeds = _clients(data, parts)
    torch.manual_seed(0)
    model = build_model("cnn", channels_last=True)
    execute = None
    if pool is not None:
        pool.start(partial(_clients, data.shared_for_training(), parts), trainer)
        execute = pool_rounds(PoolJobs(pool, trainer, pinned=False))
    try:
        options = LoopOptions(0, show_progress=False)
        recorder = run_fedavg(trainer, model, SyncServer(get_flat(model)), speeds, Rounds(config["rounds"], picked),
                              options, execute=execute)  # fmt: skip
    finally:
        if pool is not None:
            pool.close()
            pool.kill()
    history = recorder.history
    cumulative = [e["time_breakdown_s"] for e in history]
    seconds = [sum(v - before[k] for k, v in now.items() if k != "evaluation")
               for before, now in zip(cumulative, cumulative[1:])]  # fmt: skip
    samples = [now["samples_trained"] - before["samples_trained"] for before, now in zip(history, history[1:])]
    return {
        **config,
        "round_s_excl_eval": statistics.median(seconds),
        "samples_per_s": sum(samples) / sum(seconds),
        "test_accuracy": history[-1]["test_accuracy"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def workers_configs(clients: tuple[int, ...], num_train: int, num_test: int, rounds: int) -> list[dict[str, Any]]:
    """For each number of clients: 1, 2, ... up to the cores worker processes (the cores shared out)."""
    cores = usable_cores()
    return [
        {"section": "workers", "clients": n, "picked": max(4, n // 10), "workers": w, "threads": max(1, cores // w),
         "rounds": rounds, "num_train": num_train, "num_test": num_test}
        for n in clients for w in range(1, cores + 1)
    ]  # fmt: skip


def render_workers(runs: list[dict[str, Any]]) -> list[str]:
    """The section's table: each row's speed-up against one worker with as many clients."""
    one = {r["clients"]: r for r in runs if r["workers"] == 1}
    rows = [[r["clients"], r["picked"], r["workers"], r["threads"], f"{r['round_s_excl_eval']:.2f}",
             f"{r['samples_per_s']:,.0f}", f"{r['samples_per_s'] / one[r['clients']]['samples_per_s']:.2f}",
             f"{r['test_accuracy']:.4f}"] for r in runs]  # fmt: skip
    first = runs[0]
    return [
        "",
        f"Workers: FedAvg with the clients trained by N processes (cores // N torch threads each; 1 = in-process), "
        f"1 local epoch of SGD, batch {JOB.batch_size}; rounds 2-{first['rounds']}, evaluation excluded",
        tabulate(rows, headers=["clients", "picked", "workers", "threads each", "round (s)", "samples/s", "speed-up",
                                "test accuracy"], tablefmt="github", disable_numparse=True),
    ]  # fmt: skip
