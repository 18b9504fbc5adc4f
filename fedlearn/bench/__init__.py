"""``python3 -m fedlearn.bench [--quick]``: what federated simulation costs on top of the training itself.

Measures, on synthetic MNIST-shaped data (timings do not depend on pixel values):

1. throughput: a plain PyTorch loop (no fedlearn code), the baseline, FedAvg and
   FedAsync training the same model on the same number of samples;
2. CIFAR-10: each CIFAR-10 model's training throughput, without and with
   ``--augment crop-flip`` (:mod:`fedlearn.bench.cifar`, on CIFAR-shaped random tensors);
3. scaling: FedAvg with 8, 100 and 1,000 clients (IID and Dirichlet), 10 %
   picked per round, each round split into local training, aggregation,
   evaluation and the rest, with the peak memory of each (one process each);
4. evaluation: the global test set against every client's held-out set
   (``--client_test_frac``), evaluated in one pass and, for contrast, client by client;
5. client state: FedAvg against SCAFFOLD, whose control variates grow with the
   clients seen (:mod:`fedlearn.bench.state`; skipped with ``--no_scaling``);
6. workers: FedAvg with the clients trained by 1, 2, ... worker processes
   (:mod:`fedlearn.bench.workers`; skipped with ``--no_scaling``);
7. options of the hot path (``--variants``): memory layout, torch.compile,
   evaluation batch size, a vmap step over many small clients.

fedlearn's runs use the scripts' defaults (channels-last layout); the plain loop
is the plainest NCHW loop.

Every figure is the median of ``--reps`` repetitions after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn

from ..client import LocalJobConfig, LocalTrainer
from ..comm.clock import ClientSpeeds
from ..core import seeding
from ..core.flat import get_flat
from ..core.runtime import make_deterministic, versions
from ..core.timing import interleaved_medians, interleaved_times
from ..core.training import ClientTests, count_batches, evaluate
from ..data import Dataset
from ..data.partitions import PartitionSpec, hold_out, make_partition
from ..errors import OneLineParser
from ..loops.centralized import Epochs, run_centralized
from ..loops.rounds import Rounds, RoundTask, local_rounds, run_fedavg, select_clients
from ..loops.skeleton import LoopOptions
from ..loops.virtual_clock import Updates, run_async
from ..models import build_model
from ..server.asynchronous import AsyncConfig, AsyncServer
from ..server.synchronous import SyncServer
from .cifar import cifar_section, render_cifar
from .state import render_state, state_child, state_configs
from .workers import render_workers, workers_child, workers_configs

BATCH_SIZE = 100
LR = 1e-3
SCALING_CLIENTS = (8, 100, 1000)


def synthetic_dataset(num_train: int, num_test: int, seed: int = 0) -> Dataset:
    """MNIST-shaped random images and labels, already 'normalized'."""
    g = torch.Generator().manual_seed(seed)
    return Dataset(
        name="synthetic",
        train_x=torch.randn(num_train, 1, 28, 28, generator=g),
        train_y=torch.randint(0, 10, (num_train,), generator=g),
        test_x=torch.randn(num_test, 1, 28, 28, generator=g),
        test_y=torch.randint(0, 10, (num_test,), generator=g),
        mean=(0.0,),
        std=(1.0,),
        source="synthetic",
    )


def plain_model(seed: int = 0, channels_last: bool = False) -> nn.Module:
    """The reference CNN declared from scratch (no fedlearn code)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )  # fmt: skip
    return model.to(memory_format=torch.channels_last) if channels_last else model


def plain_jobs_seconds(
    data: Dataset, jobs: list[list[torch.Tensor]], seed: int = 0, channels_last: bool = False
) -> float:
    """The plainest loop over given batches of indices: a fresh Adam per job, one step per batch."""
    model = plain_model(seed, channels_last)
    x, y = data.train_x, data.train_y
    start = time.perf_counter()
    for batches in jobs:
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        for batch in batches:
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return time.perf_counter() - start


def plain_pytorch_seconds(
    data: Dataset, seed: int = 0, channels_last: bool = False, batch_size: int = BATCH_SIZE
) -> float:
    """One epoch of the plainest loop over the same tensors: the reference (no fedlearn code).

    With ``channels_last`` the model is converted to that layout, as fedlearn's default does.
    """
    order = torch.randperm(data.train_x.shape[0], generator=torch.Generator().manual_seed(seed))
    return plain_jobs_seconds(data, [list(order.split(batch_size))], seed, channels_last)


def _non_eval_seconds(final: dict[str, Any]) -> float:
    return final["wall_time_s"] - final["time_breakdown_s"]["evaluation"]


def baseline_seconds(data: Dataset, seed: int = 0) -> float:
    """One epoch of fedlearn's centralized training (evaluation excluded)."""
    torch.manual_seed(seed)
    model = build_model("cnn", channels_last=True)
    recorder = run_centralized(model, data, Epochs(1, BATCH_SIZE, "adam", LR), LoopOptions(seed, show_progress=False))
    return _non_eval_seconds(recorder.final())


def _trainer(data: Dataset, num_clients: int, partition: str, seed: int, local_epochs: int = 1) -> LocalTrainer:
    spec = PartitionSpec(partition, dirichlet_alpha=0.5)
    parts = make_partition(spec, data.train_y, num_clients, seeding.numpy_rng(seed, seeding.PARTITION))
    config = LocalJobConfig("adam", LR, BATCH_SIZE, local_epochs, seed)
    return LocalTrainer(build_model("cnn", channels_last=True), data, parts, config)


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
    torch.manual_seed(seed)
    model = build_model("cnn", channels_last=True)
    trainer = _trainer(data, num_clients, partition, seed)
    speeds = ClientSpeeds(rates=np.full(num_clients, 1000.0))
    local = local_rounds(trainer)
    paired: list[tuple[float, float, float]] = []
    shuffle = torch.Generator().manual_seed(seed + 1)

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

    execute = with_reference if plain_reference else None
    options = LoopOptions(seed, show_progress=False)
    recorder = run_fedavg(trainer, model, SyncServer(get_flat(model)), speeds, Rounds(rounds, picked), options, execute)
    history, final = recorder.history, recorder.final()
    extra_so_far = 0.0
    for entry, (_, _, extra) in zip(history, paired):  # cumulative sections: take the reference out
        extra_so_far += extra
        entry["time_breakdown_s"]["training"] -= extra_so_far
    final["time_breakdown_s"]["training"] -= extra_so_far
    final["wall_time_s"] -= extra_so_far
    return {"final": final, "history": history, "partitions": trainer.partitions, "paired": paired}


def fedavg_seconds(data: Dataset, seed: int = 0) -> float:
    """FedAvg, 8 clients all picked, one round of one local epoch: one epoch of samples (evaluation excluded)."""
    return _non_eval_seconds(fedavg_run(data, 8, 8, 1, seed=seed)["final"])


def async_seconds(data: Dataset, seed: int = 0) -> float:
    """FedAsync, 8 clients, 8 updates of one local epoch: one epoch of samples (evaluation excluded)."""
    torch.manual_seed(seed)
    model = build_model("cnn", channels_last=True)
    trainer = _trainer(data, 8, "iid", seed)
    server = AsyncServer(get_flat(model), AsyncConfig())
    speeds = ClientSpeeds(rates=np.full(8, 1000.0))
    recorder = run_async(
        trainer, model, server, speeds, Updates(8, 8, concurrency=4), LoopOptions(seed, show_progress=False)
    )
    return _non_eval_seconds(recorder.final())


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


def client_evaluation_section(
    data: Dataset, reps: int, clients: tuple[int, ...] = (100, 1000), fraction: float = 0.2
) -> dict[str, Any]:
    """Seconds of one evaluation of the global test set and of every client's held-out set (``fraction`` of
    each IID client's samples, for each number of ``clients``): in one pass, as the loops run it, and for
    contrast in a loop over the clients."""
    model = build_model("cnn", channels_last=True)
    runners: dict[str, Callable[[], Any]] = {"global test set": lambda: evaluate(model, data.test_x, data.test_y)}
    samples = {"global test set": int(data.test_y.numel())}
    for n in clients:
        parts = make_partition(PartitionSpec("iid"), data.train_y, n, seeding.numpy_rng(0, seeding.PARTITION))
        _, held = hold_out(parts, data.train_y, fraction, seeding.numpy_rng(0, seeding.HOLD_OUT))
        tests = ClientTests.gather(data.train_x, data.train_y, held)
        per_client = [(data.train_x[h], data.train_y[h]) for h in held]
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
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
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
        capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[1],
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


def render(report: dict[str, Any]) -> str:
    """The benchmark's tables (those of the sections the report holds)."""
    out: list[str] = []
    if report.get("throughput"):
        tp = report["throughput"]
        rows = [[name, f"{tp['seconds'][name]:.2f}", f"{tp['samples_per_s'][name]:,.0f}", f"{tp['spread'][name]:.3f}"]
                for name in tp["seconds"]]  # fmt: skip
        out += [f"Training throughput: one epoch of {tp['samples']:,} samples, batch {BATCH_SIZE}, median of "
                f"{report['reps']} interleaved repetitions after a warm-up (evaluation excluded)",
                tabulate(rows, headers=["run", "seconds", "samples/s", "slowest / fastest repetition"],
                         tablefmt="github", disable_numparse=True),
                "",
                tabulate([[k, f"{v:.3f}"] for k, v in tp["ratios"].items()],
                         headers=["time per trained sample", "ratio"], tablefmt="github",
                         disable_numparse=True)]  # fmt: skip
    if report.get("cifar"):
        out += render_cifar(report["cifar"], report["reps"])
    if report.get("client_evaluation"):
        ce = report["client_evaluation"]
        rows = [[name, f"{ce['samples'][name]:,}", f"{s:.3f}", f"{ce['samples_per_s'][name]:,.0f}",
                 f"{ce['vs_global_test_set'][name]:.3f}"] for name, s in ce["seconds"].items()]  # fmt: skip
        out += ["", "Evaluation: the global test set and every client's held-out set "
                    f"(--client_test_frac {ce['client_test_frac']:g}, IID clients), one evaluation each",
                tabulate(rows, headers=["evaluated", "samples", "seconds", "samples/s", "vs global test set"],
                         tablefmt="github", disable_numparse=True)]  # fmt: skip
    if report.get("scaling"):
        rows = []
        for r in report["scaling"]:
            b = r["breakdown_s"]
            rows.append([r["partition"], r["clients"], r["picked"], f"{r['samples_per_round']:,.0f}",
                         f"{r['samples_per_round'] / r['batches_per_round']:.0f}",
                         f"{r['round_s']:.2f}", f"{b['training']:.2f}", f"{b['aggregation']:.4f}",
                         f"{b['evaluation']:.2f}", f"{b['other']:.4f}", f"{1e6 * r['s_per_sample_excl_eval']:.1f}",
                         f"{1e6 * r['plain_same_jobs_s_per_sample']:.1f}", f"{r['fedlearn_vs_plain_same_jobs']:.3f}",
                         f"{r['peak_rss_mib']:.0f}"])  # fmt: skip
        first = report["scaling"][0]
        out += ["", "FedAvg scaling: 10 % of the clients per round, 1 local epoch; medians of rounds "
                    f"2-{first['rounds']} (round 1 is the warm-up) pooled over {first['processes']} process(es) "
                    "per row, run round-robin",
                tabulate(rows, headers=["partition", "clients", "picked", "samples/round", "samples/batch", "round (s)",
                                        "training",
                                        "aggregation", "evaluation", "other", "us/sample (excl. eval)",
                                        "plain loop, same jobs (us/sample)", "local training / plain loop",
                                        "peak RSS (MiB)"], tablefmt="github", disable_numparse=True)]  # fmt: skip
    if report.get("client_state"):
        out += render_state(report["client_state"])
    if report.get("workers"):
        out += render_workers(report["workers"])
    if report.get("variants"):
        rows = [[name, f"{v['seconds']:.2f}", f"{v['vs_default']:.3f}"] for name, v in report["variants"].items()]
        out += [
            "",
            "Hot-path options, each against the default it would replace (interleaved repetitions)",
            tabulate(rows, headers=["option", "seconds", "vs default"], tablefmt="github", disable_numparse=True),
        ]
    return "\n".join(out).lstrip("\n")


SECTIONS = ("throughput", "cifar", "client_evaluation", "scaling", "client_state", "workers", "variants")
CHILDREN = {"state": state_child, "workers": workers_child}  # a child's section -> what it runs (else scaling)


def chosen_sections(args: argparse.Namespace) -> list[str]:
    """The sections to run: ``--only`` ones, else all but those ``--no_scaling``/``--variants`` leave out."""
    if args.only:
        return [s for s in SECTIONS if s in args.only]
    skipped = {"scaling", "client_state", "workers"} if args.no_scaling else set()
    return [s for s in SECTIONS if s not in skipped and (s != "variants" or args.variants)]


def run_section(name: str, args: argparse.Namespace, reps: int) -> Any:
    """One section's figures, at the sizes of the mode (quick or full)."""
    num_train, num_test, rounds = (4000, 1000, 3) if args.quick else (60000, 10000, 9)
    clients = (10, 100) if args.quick else (100, 1000)
    if name == "throughput":
        return throughput_section(synthetic_dataset(num_train, num_test), reps)
    if name == "cifar":
        return cifar_section(500 if args.quick else 5000, reps)
    if name == "client_evaluation":
        data = synthetic_dataset(num_train, num_test).to(torch.device("cpu"), channels_last=True)
        return client_evaluation_section(data, reps, clients=clients)
    few = args.quick  # quick: fewer configurations of the multi-process sections (each starts processes)
    if name == "scaling":
        scaled = SCALING_CLIENTS[:2] if few else SCALING_CLIENTS
        return scaling_section(num_train, num_test, rounds, args.threads, passes=1 if few else 2, clients=scaled)
    if name == "client_state":
        state_clients = clients[-1:] if few else clients
        return [run_child(c) for c in state_configs(state_clients, num_train, num_test, args.threads)]
    if name == "workers":
        return [run_child(c) for c in workers_configs((100,) if few else (8, 100), num_train, num_test, rounds)]
    from .variants import variants_section  # heavy (torch.compile): only when asked

    return variants_section(synthetic_dataset(num_train, num_test), reps, compile_model=not args.quick)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = OneLineParser(prog="python3 -m fedlearn.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer configurations, for CI: 1-2 minutes")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per figure (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument(
        "--no_scaling", action="store_true", help="skip the multi-process sections (scaling, client state, workers)"
    )
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeat for several)")
    parser.add_argument(
        "--variants", action="store_true", help="also measure layouts, torch.compile (full mode), eval batch, vmap"
    )
    parser.add_argument("--out", default="bench.json", help="where to write the JSON report")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        config = json.loads(args.child)
        print(json.dumps(CHILDREN.get(config.get("section"), scaling_child)(config)))
        return 0
    if args.threads < 1 or (args.reps is not None and args.reps < 1):
        parser.error("--threads and --reps must be positive")
    torch.set_num_threads(args.threads)
    make_deterministic()
    reps = args.reps or (2 if args.quick else 5)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "reps": reps,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": versions(),
    }
    for name in chosen_sections(args):
        report[name] = run_section(name, args, reps)
    report["bench_seconds"] = time.perf_counter() - started
    print(render(report))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nbenchmark took {report['bench_seconds']:.0f} s; report written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
