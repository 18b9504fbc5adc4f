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

import statistics
from typing import Any

import torch
from tabulate import tabulate

from ..core.runtime import make_deterministic, usable_cores
from ..distributed.launch import pool_jobs, spawn_workers
from ..distributed.pool import pool_rounds
from .data import synthetic_dataset
from .runs import config_for, federated, peak_rss_mib

LOCAL = {"optimizer": "sgd", "init_lr": 0.01, "batch_size": 100}  # 1 local epoch (the benchmark's runs)


def workers_child(config: dict[str, Any]) -> dict[str, Any]:
    """One FedAvg run with ``config["workers"]`` worker processes; returns its per-round figures."""
    workers, threads = config["workers"], config["threads"]
    cfg = config_for("run_federated", **LOCAL, num_clients=config["clients"], num_select_clients=config["picked"],
                     global_epoch=config["rounds"], seed=0, workers=workers, threads_per_worker=threads)  # fmt: skip
    torch.set_num_threads(threads)  # as run_federated does with --threads_per_worker, in every process
    make_deterministic()
    pool = spawn_workers(cfg)  # first, as the scripts start them: they come up while the data are made
    try:
        data = synthetic_dataset(config["num_train"], config["num_test"]).to(torch.device("cpu"), channels_last=True)
        run = federated(cfg, data)
        with pool_jobs(cfg, data, run.partition, run.clients.trainer, pool) as jobs:  # None: in-process
            recorder = run.run(pool_rounds(jobs) if jobs is not None else None)
    finally:
        if pool is not None:
            pool.kill()  # after a clean close, only what is left of processes that said BYE
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
        "peak_rss_mib": peak_rss_mib(),
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
        f"1 local epoch of SGD, batch {LOCAL['batch_size']}; rounds 2-{first['rounds']}, evaluation excluded",
        tabulate(rows, headers=["clients", "picked", "workers", "threads each", "round (s)", "samples/s", "speed-up",
                                "test accuracy"], tablefmt="github", disable_numparse=True),
    ]  # fmt: skip
