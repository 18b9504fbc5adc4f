"""Each entry script, run as a user would, on tiny made-up data."""

import json

import pytest

from conftest import run_script

TINY = [
    "--batch_size",
    "20",
    "--init_lr",
    "1e-3",
    "--epoch",
    "2",
    "--global_epoch",
    "3",
    "--local_epoch",
    "1",
    "--num_clients",
    "5",
    "--num_select_clients",
    "2",
    "--delay",
    "straggler",
    "--straggler_fraction",
    "0.4",
]
SHARED_FLAGS = {
    "data_dir",
    "dataset",
    "augment",
    "no_download",
    "batch_size",
    "epoch",
    "init_lr",
    "model",
    "optimizer",
    "seed",
    "device",
    "global_epoch",
    "local_epoch",
    "num_clients",
    "num_select_clients",
    "delay",
    "client_rate",
    "comm_delay",
    "straggler_fraction",
    "straggler_slowdown",
    "delay_spread",
    "target_acc",
    "save",
    "no_progress",
    "partition",
    "dirichlet_alpha",
    "shards_per_client",
    "classes_per_client",
    "size_skew",
    "show_partition",
    "client_test_frac",
    "prox_mu",
    "no_channels_last",
    "byzantine",
    "attack",
    "attack_scale",
    "gar",
    "gar_f",
    "trim",
    "multikrum_m",
    "gm_iters",
    "clip_norm",
    "distributed",
    "timeout",
    "workers",
    "threads_per_worker",
    "checkpoint",
    "checkpoint_every",
    "resume",
    "server_opt",
    "drift_correction",
    "server_lr",
    "server_momentum",
    "server_b1",
    "server_b2",
    "server_tau",
    "compress",
    "compress_ratio",
    "error_feedback",
    "qsgd_levels",
    "uplink_mbps",
    "downlink_mbps",
    "latency",
    "bandwidth",
    "bandwidth_spread",
    "dp_clip",
    "dp_noise",
    "dp_delta",
    "log",
    "no_normalize",
    "data_fraction",
    "synthetic_alpha",
    "synthetic_beta",
    "synthetic_devices",
    "synthetic_seed",
    "round_stragglers",
    "straggler_work",
    "personalize",
    "finetune_epochs",
    "personal_layers",
    "ditto_lambda",
    "local_only",
}
ASYNC_FLAGS = {
    "algorithm",
    "alpha",
    "staleness",
    "staleness_a",
    "staleness_b",
    "buffer_size",
    "concurrency",
    "max_updates",
    "max_staleness",
    "eval_every",
}
RESULT_ROWS = [
    "Test accuracy (%)",
    "Test loss",
    "Wall-clock time (s)",
    "Simulated time (s)",
    "Samples trained",
    "Client updates",
]


def run(script, data_dir, out, *extra):
    proc = run_script(script, "--data_dir", str(data_dir), "--save", str(out), *TINY, *extra)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(out.read_text())


def check_contract(doc, script, steps):
    """``steps``: the history's step numbers (epochs, rounds, or client updates received)."""
    assert doc["script"] == script
    assert set(doc["args"]) == SHARED_FLAGS | (ASYNC_FLAGS if script == "run_async" else set())
    assert doc["dataset"] == "mnist" and doc["seed"] == 0 and doc["device"] == "cpu"
    assert {"python", "torch", "torchvision", "fedlearn"} <= set(doc["versions"])
    final = doc["final"]
    assert {"test_accuracy", "test_loss", "wall_time_s", "sim_time", "samples_trained", "client_updates"} <= set(final)
    assert 0.0 <= final["test_accuracy"] <= 1.0 and final["test_loss"] > 0
    assert [entry["step"] for entry in doc["history"]] == steps
    for entry in doc["history"]:
        assert {"sim_time", "wall_time_s", "test_accuracy", "test_loss"} <= set(entry)
    assert final["test_accuracy"] == doc["history"][-1]["test_accuracy"]


def check_printed(proc, bar):
    out = proc.stdout
    assert out.index("Hyperparameters") < out.index("Results")
    for row in RESULT_ROWS:
        assert row in out
    assert "--num_select_clients" in out and "device" in out and "dataset" in out
    assert bar in proc.stderr  # the tqdm progress bar


def test_baseline_end_to_end(tiny_data_dir, tmp_path):
    proc, doc = run("run_baseline.py", tiny_data_dir, tmp_path / "b.json")
    check_printed(proc, "Baseline")
    check_contract(doc, "run_baseline", steps=[1, 2])
    assert doc["final"]["samples_trained"] == 800 and doc["final"]["sim_time"] is None
    assert doc["final"]["test_accuracy"] > 0.8  # the made-up classes are easy
    assert "local files" in doc["run"]["dataset source"]  # files in DATA_DIR/MNIST/raw used as they are


@pytest.mark.slow
def test_federated_end_to_end_and_reproducible(tiny_data_dir, tmp_path):
    proc, doc = run("run_federated.py", tiny_data_dir, tmp_path / "f1.json")
    check_printed(proc, "FedAvg")
    check_contract(doc, "run_federated", steps=[1, 2, 3])
    final = doc["final"]
    assert final["client_updates"] == 6 and final["samples_trained"] == 6 * 80
    sim = [e["sim_time"] for e in doc["history"]]
    assert all(b > a for a, b in zip(sim, sim[1:]))
    assert doc["clients"]["sizes"] == [80] * 5
    assert doc["partition"]["kind"] == "iid" and doc["partition"]["sizes"] == [80] * 5
    assert doc["partition"]["label_skew_mean"] < 0.3 and len(doc["partition"]["label_histograms"]) == 5

    _, again = run("run_federated.py", tiny_data_dir, tmp_path / "f2.json")
    _, other = run("run_federated.py", tiny_data_dir, tmp_path / "f3.json", "--seed", "1")

    assert strip(again["history"]) == strip(doc["history"])  # bit-identical numbers
    assert strip(other["history"]) != strip(doc["history"])


def strip(history):
    return [{k: v for k, v in e.items() if k not in ("wall_time_s", "time_breakdown_s")} for e in history]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["fedasync", "fedbuff"])
def test_async_end_to_end_and_reproducible(algorithm, tiny_data_dir, tmp_path):
    extra = ["--algorithm", algorithm, "--buffer_size", "2", "--target_acc", "0.3"]
    proc, doc = run("run_async.py", tiny_data_dir, tmp_path / "a1.json", *extra)
    check_printed(proc, "FedAsync" if algorithm == "fedasync" else "FedBuff")
    for row in ("Mean staleness", "Max staleness", "Discarded updates", "Time to 30.00% accuracy"):
        assert row in proc.stdout
    final = doc["final"]
    # defaults resolved from the other flags: budget parity with FedAvg's 3 rounds x 2 clients
    assert doc["args"]["max_updates"] == 6 and doc["args"]["concurrency"] == 2 and doc["args"]["eval_every"] == 2
    check_contract(doc, "run_async", steps=[2, 4, 6])
    assert final["client_updates"] == 6 and final["samples_trained"] == 6 * 80
    assert final["server_steps"] == (6 if algorithm == "fedasync" else 3)
    assert {"mean_staleness", "max_staleness", "discarded_updates"} <= set(final)
    reached = final["time_to_target"]
    assert reached is not None and reached["sim_time"] <= final["sim_time"]
    assert reached["step"] == next(e["step"] for e in doc["history"] if e["test_accuracy"] >= 0.3)

    _, again = run("run_async.py", tiny_data_dir, tmp_path / "a2.json", *extra)
    _, other = run("run_async.py", tiny_data_dir, tmp_path / "a3.json", *extra, "--seed", "5")
    assert strip(again["history"]) == strip(doc["history"])
    assert strip(other["history"]) != strip(doc["history"])


def test_unreached_target_is_reported_as_never(tiny_data_dir, tmp_path):
    proc, doc = run(
        "run_federated.py", tiny_data_dir, tmp_path / "t.json", "--target_acc", "1.0", "--global_epoch", "1"
    )
    assert doc["final"]["time_to_target"] is None and doc["final"]["target_accuracy"] == 1.0
    assert "never reached" in proc.stdout


@pytest.mark.parametrize("script", ["run_baseline.py", "run_federated.py", "run_async.py"])
@pytest.mark.slow
def test_help_lists_every_shared_flag(script):
    proc = run_script(script, "--help")
    assert proc.returncode == 0
    for flag in SHARED_FLAGS | (ASYNC_FLAGS if script == "run_async.py" else set()):
        assert f"--{flag}" in proc.stdout
