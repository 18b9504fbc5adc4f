"""Each entry script, run as a user would, on tiny made-up data."""

import json

import pytest
from conftest import run_script

TINY = ["--batch_size", "20", "--init_lr", "1e-3", "--epoch", "2", "--global_epoch", "3", "--local_epoch", "1",
        "--num_clients", "5", "--num_select_clients", "2", "--delay", "straggler", "--straggler_fraction", "0.4"]
SHARED_FLAGS = {"data_dir", "dataset", "no_download", "batch_size", "epoch", "init_lr", "model", "optimizer", "seed",
                "device", "global_epoch", "local_epoch", "num_clients", "num_select_clients", "delay", "client_rate",
                "comm_delay", "straggler_fraction", "straggler_slowdown", "delay_spread", "save", "no_progress"}
RESULT_ROWS = ["Test accuracy (%)", "Test loss", "Wall-clock time (s)", "Simulated time (s)", "Samples trained",
               "Client updates"]


def run(script, data_dir, out, *extra):
    proc = run_script(script, "--data_dir", str(data_dir), "--save", str(out), *TINY, *extra)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(out.read_text())


def check_contract(doc, script, steps):
    assert doc["script"] == script
    assert set(doc["args"]) == SHARED_FLAGS
    assert doc["dataset"] == "mnist" and doc["seed"] == 0 and doc["device"] == "cpu"
    assert {"python", "torch", "torchvision", "fedlearn"} <= set(doc["versions"])
    final = doc["final"]
    assert {"test_accuracy", "test_loss", "wall_time_s", "sim_time", "samples_trained", "client_updates"} <= set(final)
    assert 0.0 <= final["test_accuracy"] <= 1.0 and final["test_loss"] > 0
    assert len(doc["history"]) == steps
    for i, entry in enumerate(doc["history"], start=1):
        assert entry["step"] == i
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
    check_contract(doc, "run_baseline", steps=2)
    assert doc["final"]["samples_trained"] == 800 and doc["final"]["sim_time"] is None
    assert doc["final"]["test_accuracy"] > 0.8  # the made-up classes are easy
    assert "local files" in doc["run"]["dataset source"]  # files in DATA_DIR/MNIST/raw used as they are


def test_federated_end_to_end_and_reproducible(tiny_data_dir, tmp_path):
    proc, doc = run("run_federated.py", tiny_data_dir, tmp_path / "f1.json")
    check_printed(proc, "FedAvg")
    check_contract(doc, "run_federated", steps=3)
    final = doc["final"]
    assert final["client_updates"] == 6 and final["samples_trained"] == 6 * 80
    sim = [e["sim_time"] for e in doc["history"]]
    assert all(b > a for a, b in zip(sim, sim[1:]))
    assert doc["clients"]["sizes"] == [80] * 5

    _, again = run("run_federated.py", tiny_data_dir, tmp_path / "f2.json")
    _, other = run("run_federated.py", tiny_data_dir, tmp_path / "f3.json", "--seed", "1")

    def strip(history):
        return [{k: v for k, v in e.items() if k != "wall_time_s"} for e in history]

    assert strip(again["history"]) == strip(doc["history"])  # bit-identical numbers
    assert strip(other["history"]) != strip(doc["history"])


@pytest.mark.parametrize("script", ["run_baseline.py", "run_federated.py"])
def test_help_lists_every_shared_flag(script):
    proc = run_script(script, "--help")
    assert proc.returncode == 0
    for flag in SHARED_FLAGS:
        assert f"--{flag}" in proc.stdout
