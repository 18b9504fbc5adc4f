"""The benchmark's client-state section: what SCAFFOLD's client control variates cost.

SCAFFOLD keeps one control variate (a float32 vector the size of the model) per
client that has taken part, so its memory grows with the clients seen. Each
configuration runs FedAvg and SCAFFOLD with the same local training (SGD with
momentum, as NIID-Bench) and every client picked every round, so after round 1
every client holds a control variate; each run is a fresh process, so its peak
memory is its own.
"""

from __future__ import annotations

import resource
import statistics
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

from ..client import LocalJobConfig, LocalTrainer
from ..comm.clock import ClientSpeeds
from ..core import seeding
from ..core.flat import get_flat
from ..core.runtime import make_deterministic
from ..data.partitions import PartitionSpec, make_partition
from ..loops.rounds import Rounds, run_fedavg
from ..loops.skeleton import LoopOptions
from ..models import build_model
from ..server.scaffold import ServerControl
from ..server.synchronous import SyncServer

LOCAL = {"optimizer": "sgd-momentum", "lr": 0.01, "batch_size": 64}  # NIID-Bench's local training
METHODS = ("none", "scaffold")  # --drift_correction


def state_child(config: dict[str, Any]) -> dict[str, Any]:
    """One run of ``config["drift_correction"]`` with ``config["clients"]`` IID clients, all picked every round."""
    from . import synthetic_dataset  # the benchmark's data, shared with its other sections

    torch.set_num_threads(config["threads"])
    make_deterministic()
    data = synthetic_dataset(config["num_train"], config["num_test"]).to(torch.device("cpu"), channels_last=True)
    n, method = config["clients"], config["drift_correction"]
    parts = make_partition(PartitionSpec("iid"), data.train_y, n, seeding.numpy_rng(0, seeding.PARTITION))
    job = LocalJobConfig(epochs=1, seed=0, drift_correction=method, **LOCAL)
    trainer = LocalTrainer(build_model("cnn", channels_last=True), data, parts, job)
    torch.manual_seed(0)
    model = build_model("cnn", channels_last=True)
    weights = get_flat(model)
    server = SyncServer(weights, control=ServerControl(weights.numel(), n) if method == "scaffold" else None)
    options = LoopOptions(0, show_progress=False)
    speeds = ClientSpeeds(rates=np.full(n, 1000.0))
    recorder = run_fedavg(trainer, model, server, speeds, Rounds(config["rounds"], n), options)
    cumulative = [e["time_breakdown_s"] for e in recorder.history]
    rounds = [{k: now[k] - before[k] for k in now} for before, now in zip(cumulative, cumulative[1:])]
    summary = server.summary()
    return {
        **config,
        "parameters": int(weights.numel()),
        "round_s_excl_eval": statistics.median(sum(v for k, v in r.items() if k != "evaluation") for r in rounds),
        "aggregation_s": statistics.median(r["aggregation"] for r in rounds),
        "clients_with_control_variates": summary.get("clients_with_control_variates", 0),
        "client_control_variates_mib": summary.get("client_control_variates_mib", 0.0),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def state_configs(clients: tuple[int, ...], num_train: int, num_test: int, threads: int) -> list[dict[str, Any]]:
    """FedAvg and SCAFFOLD for each number of clients, 3 rounds (round 1, the warm-up, is not measured)."""
    return [
        {"section": "state", "drift_correction": method, "clients": n, "rounds": 3,
         "num_train": num_train, "num_test": num_test, "threads": threads}
        for n in clients for method in METHODS
    ]  # fmt: skip


def render_state(runs: list[dict[str, Any]]) -> list[str]:
    """The section's table, each SCAFFOLD row beside the FedAvg run with as many clients."""
    fedavg = {r["clients"]: r for r in runs if r["drift_correction"] == "none"}
    rows = []
    for r in runs:
        base = fedavg.get(r["clients"], r)
        rows.append([
            "SCAFFOLD" if r["drift_correction"] == "scaffold" else "FedAvg", r["clients"],
            f"{r['round_s_excl_eval']:.2f}", f"{r['round_s_excl_eval'] / base['round_s_excl_eval']:.3f}",
            f"{r['aggregation_s']:.4f}", r["clients_with_control_variates"],
            f"{r['client_control_variates_mib']:.1f}", f"{r['peak_rss_mib']:.0f}",
            f"{r['peak_rss_mib'] - base['peak_rss_mib']:+.0f}",
        ])  # fmt: skip
    first = runs[0]
    return [
        "",
        f"Client state: SCAFFOLD's control variates ({first['parameters']:,}-parameter CNN, every client picked "
        f"every round, {LOCAL['optimizer']} lr {LOCAL['lr']} batch {LOCAL['batch_size']}, 1 local epoch; medians of "
        f"rounds 2-{first['rounds']}, one process per row)",
        tabulate(rows, headers=["method", "clients", "round (s, excl. eval)", "vs FedAvg", "aggregation (s)",
                                "clients holding c_i", "c_i memory (MiB)", "peak RSS (MiB)", "vs FedAvg (MiB)"],
                 tablefmt="github", disable_numparse=True),
    ]  # fmt: skip
