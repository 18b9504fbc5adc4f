"""The benchmark's sections over many clients: FedAvg scaling to 1,000 clients (each configuration in its own
process, so its peak memory is its own; :func:`run_child` starts those processes for every multi-process section)
and the evaluation of every client's held-out set."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import compose
from ..core.runtime import make_deterministic
from ..core.timing import interleaved_medians
from ..core.training import count_batches, evaluate
from ..data import Dataset
from ..loops.rounds import select_clients
from .data import BATCH_SIZE, synthetic_dataset
from .runs import config_for, fedavg_run, peak_rss_mib, quiet_options

SCALING_CLIENTS = (8, 100, 1000)
ROOT = Path(__file__).resolve().parents[2]  # the directory holding the fedlearn package: the children's cwd


def client_evaluation_section(
    data: Dataset, reps: int, clients: tuple[int, ...] = (100, 1000), fraction: float = 0.2
) -> dict[str, Any]:
    """Seconds of one evaluation of the global test set and of every client's held-out set (``fraction`` of
    each IID client's samples, for each number of ``clients``): in one pass, as the loops run it, and for
    contrast in a loop over the clients."""
    model = compose.worker_model(config_for("run_federated"), data)  # the weights do not change the time
    runners: dict[str, Callable[[], Any]] = {"global test set": lambda: evaluate(model, data.test_x, data.test_y)}
    samples = {"global test set": int(data.test_y.numel())}
    for n in clients:
        cfg = config_for("run_federated", num_clients=n, client_test_frac=fraction, seed=0)
        partition = compose.make_partition(cfg, data, {})  # the held-out sets, and below the loops' ClientTests
        tests = quiet_options(cfg, data, partition).client_tests
        per_client = [(data.train_x[h], data.train_y[h]) for h in partition.held_out]
        one_pass, looped = (
            f"{n} clients' held-out sets, one pass (fedlearn)",
            f"{n} clients' held-out sets, client by client",
        )
        runners[one_pass] = lambda tests=tests: tests.accuracies(model)
        runners[looped] = lambda per_client=per_client: [evaluate(model, x, y) for x, y in per_client if len(y)]
        samples[one_pass] = samples[looped] = int(tests.y.numel())
    seconds = interleaved_medians(runners, reps)
    return {
        "client_test_frac": fraction,
        "samples": samples,
        "seconds": seconds,
        "samples_per_s": {k: samples[k] / v for k, v in seconds.items()},
        "vs_global_test_set": {k: v / seconds["global test set"] for k, v in seconds.items()},
    }


def scaling_child(config: dict[str, Any]) -> dict[str, Any]:
    """One scaling configuration, run in its own process so its peak memory is its own."""
    torch.set_num_threads(config["threads"])
    make_deterministic()
    data = synthetic_dataset(config["num_train"], config["num_test"]).to(torch.device("cpu"), channels_last=True)
    n, picked = config["clients"], max(1, config["clients"] // 10)
    run = fedavg_run(data, n, picked, config["rounds"], config["partition"], plain_reference=True)
    parts = run["partitions"]
    schedule = [select_clients(0, r, n, picked) for r in range(2, config["rounds"] + 1)]
    batches = [sum(count_batches(int(parts[int(c)].numel()), BATCH_SIZE) for c in chosen) for chosen in schedule]
    paired = run["paired"][1:]  # round 1 is the warm-up
    history = run["history"]
    # per-round figures from the cumulative breakdown; round 1 is the warm-up
    cumulative = [e["time_breakdown_s"] for e in history]
    rounds = [{k: cumulative[i][k] - cumulative[i - 1][k] for k in cumulative[i]} for i in range(1, len(cumulative))]
    samples = [history[i]["samples_trained"] - history[i - 1]["samples_trained"] for i in range(1, len(history))]
    return {
        **config,
        "picked": picked,
        "rounds_measured": rounds,
        "samples": samples,
        "batches": batches,
        "fedlearn_vs_plain_same_jobs": [fed / plain for fed, plain, _ in paired],
        "plain_same_jobs_s_per_sample": [plain / s for (_, plain, _), s in zip(paired, samples)],
        "peak_rss_mib": peak_rss_mib(),
    }


def summarize_scaling(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the measured rounds of several processes of one configuration into medians."""
    rounds = [r for run in runs for r in run["rounds_measured"]]
    samples = [s for run in runs for s in run["samples"]]
    return {
        **{
            k: v
            for k, v in runs[0].items()
            if k in ("clients", "partition", "rounds", "num_train", "num_test", "threads", "picked")
        },
        "processes": len(runs),
        "rounds_pooled": len(rounds),
        "samples_per_round": statistics.median(samples),
        "batches_per_round": statistics.median(b for run in runs for b in run["batches"]),
        "round_s": statistics.median(sum(r.values()) for r in rounds),
        "breakdown_s": {k: statistics.median(r[k] for r in rounds) for k in rounds[0]},
        "s_per_sample_excl_eval": statistics.median(
            sum(v for k, v in r.items() if k != "evaluation") / s for r, s in zip(rounds, samples)
        ),
        "plain_same_jobs_s_per_sample": statistics.median(
            v for run in runs for v in run["plain_same_jobs_s_per_sample"]
        ),
        # geometric mean over rounds: as many rounds with the plain loop first as second (see fedavg_run)
        "fedlearn_vs_plain_same_jobs": statistics.geometric_mean(
            v for run in runs for v in run["fedlearn_vs_plain_same_jobs"]
        ),
        "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
    }


def run_child(config: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in a fresh process (its peak memory is its own); returns its figures."""
    proc = subprocess.run(
        [sys.executable, "-m", "fedlearn.bench", "--child", json.dumps(config)],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark run {config} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scaling_section(
    num_train: int, num_test: int, rounds: int, threads: int, passes: int, clients: tuple[int, ...] = SCALING_CLIENTS
) -> list[dict[str, Any]]:
    """Every scaling configuration in fresh processes, ``passes`` times round-robin (drift hits all alike)."""
    configs = [
        {"clients": n, "partition": partition, "rounds": rounds, "num_train": num_train,
         "num_test": num_test, "threads": threads}
        for partition in ("iid", "dirichlet") for n in clients
    ]  # fmt: skip
    runs: list[list[dict[str, Any]]] = [[] for _ in configs]
    for _ in range(passes):
        for i, config in enumerate(configs):
            runs[i].append(run_child(config))
    return [summarize_scaling(r) for r in runs]
