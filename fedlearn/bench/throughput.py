"""The benchmark's throughput section: a plain PyTorch loop (no fedlearn code), the baseline, FedAvg and FedAsync
training the same model on the same number of samples, one epoch each, evaluation excluded."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from .. import compose
from ..core.flat import get_flat
from ..core.timing import interleaved_times
from ..data import Dataset
from ..loops.virtual_clock import Updates, run_async
from ..server.asynchronous import AsyncServer
from .data import plain_pytorch_seconds
from .runs import baseline_seconds, config_for, fedavg_run, non_eval_seconds, quiet_options


def fedavg_seconds(data: Dataset, seed: int = 0) -> float:
    """FedAvg, 8 clients all picked, one round of one local epoch: one epoch of samples (evaluation excluded)."""
    return non_eval_seconds(fedavg_run(data, 8, 8, 1, seed=seed)["final"])


def async_seconds(data: Dataset, seed: int = 0) -> float:
    """FedAsync, 8 clients, 8 updates of one local epoch: one epoch of samples (evaluation excluded)."""
    cfg = config_for("run_async", num_clients=8, max_updates=8, eval_every=8, concurrency=4, seed=seed)
    model = compose.initial_model(cfg, data)  # as app's async mode wires a run_async run
    partition = compose.make_partition(cfg, data, {})
    clients = compose.setup_clients(cfg, data, partition, {})
    initial = get_flat(model)
    aggregator, step = compose.server_parts(cfg, initial.numel(), clients.threat)
    server = AsyncServer(initial, cfg.asynchronous.server, aggregator, step, compose.codec(cfg))
    budget = Updates(cfg.asynchronous.max_updates, cfg.asynchronous.eval_every, cfg.asynchronous.concurrency)
    recorder = run_async(clients.trainer, model, server, clients.speeds, budget, quiet_options(cfg, data, partition))
    return non_eval_seconds(recorder.final())


def throughput_section(data: Dataset, reps: int) -> dict[str, Any]:
    """Seconds and samples per second of each way of training one epoch of ``data``."""
    n = int(data.train_y.numel())
    layout = data.to(torch.device("cpu"), channels_last=True)  # as the scripts hold it
    times = interleaved_times(
        {
            "plain PyTorch loop": lambda: plain_pytorch_seconds(data),
            "plain PyTorch loop, channels_last": lambda: plain_pytorch_seconds(layout, channels_last=True),
            "plain PyTorch loop, channels_last, batch 60": lambda: plain_pytorch_seconds(
                layout, channels_last=True, batch_size=60
            ),
            "run_baseline": lambda: baseline_seconds(layout),
            "run_federated (FedAvg)": lambda: fedavg_seconds(layout),
            "run_async (FedAsync)": lambda: async_seconds(layout),
        },
        reps,
        self_timed=True,
    )
    seconds = {k: statistics.median(v) for k, v in times.items()}
    per_sample = {k: v / n for k, v in seconds.items()}
    return {
        "samples": n,
        "seconds": seconds,
        "spread": {k: max(v) / min(v) for k, v in times.items()},  # slowest / fastest repetition
        "repetitions_s": times,
        "samples_per_s": {k: n / v for k, v in seconds.items()},
        "ratios": {
            "baseline / plain (same layout: channels_last)": per_sample["run_baseline"]
            / per_sample["plain PyTorch loop, channels_last"],
            "baseline / plain (default NCHW)": per_sample["run_baseline"] / per_sample["plain PyTorch loop"],
            "FedAvg / baseline": per_sample["run_federated (FedAvg)"] / per_sample["run_baseline"],
            "FedAsync / baseline": per_sample["run_async (FedAsync)"] / per_sample["run_baseline"],
            "FedAsync / FedAvg": per_sample["run_async (FedAsync)"] / per_sample["run_federated (FedAvg)"],
            "plain batch 60 / plain batch 100 (channels_last)": per_sample[
                "plain PyTorch loop, channels_last, batch 60"
            ]
            / per_sample["plain PyTorch loop, channels_last"],
        },
    }
