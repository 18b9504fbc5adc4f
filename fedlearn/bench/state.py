"""The benchmark's client-state section: what SCAFFOLD's client control variates cost.

SCAFFOLD keeps one control variate (a float32 vector the size of the model) per
client that has taken part, so its memory grows with the clients seen. Each
configuration runs FedAvg and SCAFFOLD with the same local training (SGD with
momentum, as NIID-Bench) and every client picked every round, so after round 1
every client holds a control variate; each run is a fresh process, so its peak
memory is its own.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch
from tabulate import tabulate

from ..core.runtime import make_deterministic
from .data import synthetic_dataset
from .runs import config_for, federated, peak_rss_mib

LOCAL = {"optimizer": "sgd-momentum", "init_lr": 0.01, "batch_size": 64}  # NIID-Bench's local training
METHODS = ("none", "scaffold")  # --drift_correction


def state_child(config: dict[str, Any]) -> dict[str, Any]:
    """One run of ``config["drift_correction"]`` with ``config["clients"]`` IID clients, all picked every round."""
    torch.set_num_threads(config["threads"])
    make_deterministic()
    data = synthetic_dataset(config["num_train"], config["num_test"]).to(torch.device("cpu"), channels_last=True)
    n, method = config["clients"], config["drift_correction"]
    cfg = config_for("run_federated", **LOCAL, num_clients=n, num_select_clients=n, global_epoch=config["rounds"],
                     drift_correction=method, seed=0)  # fmt: skip
    run = federated(cfg, data)  # SCAFFOLD: the server's control variate and the clients' c_i, as the script has them
    recorder = run.run()
    cumulative = [e["time_breakdown_s"] for e in recorder.history]
    rounds = [{k: now[k] - before[k] for k in now} for before, now in zip(cumulative, cumulative[1:])]
    summary = run.server.summary()
    return {
        **config,
        "parameters": int(run.server.weights.numel()),
        "round_s_excl_eval": statistics.median(sum(v for k, v in r.items() if k != "evaluation") for r in rounds),
        "aggregation_s": statistics.median(r["aggregation"] for r in rounds),
        "clients_with_control_variates": summary.get("clients_with_control_variates", 0),
        "client_control_variates_mib": summary.get("client_control_variates_mib", 0.0),
        "peak_rss_mib": peak_rss_mib(),
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
        f"every round, {LOCAL['optimizer']} lr {LOCAL['init_lr']} batch {LOCAL['batch_size']}, 1 local epoch; "
        f"medians of rounds 2-{first['rounds']}, one process per row)",
        tabulate(rows, headers=["method", "clients", "round (s, excl. eval)", "vs FedAvg", "aggregation (s)",
                                "clients holding c_i", "c_i memory (MiB)", "peak RSS (MiB)", "vs FedAvg (MiB)"],
                 tablefmt="github", disable_numparse=True),
    ]  # fmt: skip
