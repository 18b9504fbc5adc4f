"""The benchmark command runs and reports what it claims (no timing assertions: those are for the benchmark)."""

import json

import pytest
import torch

from fedlearn import bench
from fedlearn.bench import cifar as bench_cifar
from fedlearn.bench import data as bench_data
from fedlearn.bench import scaling as bench_scaling
from fedlearn.bench import state as bench_state
from fedlearn.bench import workers as bench_workers
from fedlearn.bench.variants import many_clients_step
from fedlearn.core.runtime import usable_cores
from fedlearn.core.timing import interleaved_medians


@pytest.mark.slow
def test_quick_benchmark_writes_tables_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--no_scaling", "--reps", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    tp = report["throughput"]
    assert tp["samples"] == 4000 and report["mode"] == "quick"
    assert set(tp["seconds"]) == {
        "plain PyTorch loop",
        "plain PyTorch loop, channels_last",
        "plain PyTorch loop, channels_last, batch 60",
        "run_baseline",
        "run_federated (FedAvg)",
        "run_async (FedAsync)",
    }
    assert all(s > 0 for s in tp["seconds"].values())
    per_sample = {k: v / 4000 for k, v in tp["seconds"].items()}
    assert (
        abs(tp["ratios"]["FedAvg / baseline"] - per_sample["run_federated (FedAvg)"] / per_sample["run_baseline"])
        < 1e-9
    )
    assert "Training throughput" in capsys.readouterr().out
    assert "100 clients' held-out sets, one pass (fedlearn)" in report["client_evaluation"]["seconds"]
    assert set(report["cifar"]["seconds"]) == {f"{m} / {a}" for m in ("cnn-cifar", "resnet20")
                                               for a in ("none", "crop-flip")}  # fmt: skip


def test_the_cifar_section_times_each_model_with_and_without_augmentation():
    section = bench_cifar.cifar_section(100, reps=1)
    assert section["parameters"] == {"cnn-cifar": 62_006, "resnet20": 269_722}
    for name, seconds in section["seconds"].items():
        assert seconds > 0 and section["samples_per_s"][name] == pytest.approx(100 / seconds)
    table = "\n".join(bench_cifar.render_cifar(section, reps=1))
    assert "| resnet20  | 269,722      | crop-flip |" in table and "one epoch of 100 CIFAR-shaped" in table


def test_client_evaluation_section_counts_every_held_out_sample():
    data = bench_data.synthetic_dataset(1000, 300)
    result = bench_scaling.client_evaluation_section(data, reps=1, clients=(10,), fraction=0.2)
    held = result["samples"]["10 clients' held-out sets, one pass (fedlearn)"]
    assert held == result["samples"]["10 clients' held-out sets, client by client"]
    assert abs(held - 200) <= 10 * 10  # 20 % of each client's samples, rounded per label
    assert result["samples"]["global test set"] == 300
    assert all(s > 0 for s in result["seconds"].values())


def test_scaling_child_splits_rounds_and_measures_memory():
    threads = torch.get_num_threads()
    config = {
        "clients": 100,
        "partition": "dirichlet",
        "rounds": 3,
        "num_train": 1000,
        "num_test": 200,
        "threads": threads,
    }
    result = bench_scaling.summarize_scaling([bench_scaling.scaling_child(config), bench_scaling.scaling_child(config)])
    assert result["picked"] == 10 and result["processes"] == 2 and result["rounds_pooled"] == 4
    assert 0 < result["batches_per_round"] <= 10 * 10
    assert set(result["breakdown_s"]) == {"training", "aggregation", "evaluation", "other"}
    assert result["breakdown_s"]["training"] > 0 and result["peak_rss_mib"] > 100
    assert abs(result["round_s"] - sum(result["breakdown_s"].values())) < 0.5 * result["round_s"]
    assert result["plain_same_jobs_s_per_sample"] > 0 and result["fedlearn_vs_plain_same_jobs"] > 0


def test_plain_jobs_loop_trains_every_job_from_a_fresh_optimizer():
    data = bench_data.synthetic_dataset(300, 10)
    jobs = [list(torch.arange(0, 150).split(100)), list(torch.arange(150, 300).split(100))]
    assert bench_data.plain_jobs_seconds(data, jobs) > 0
    assert bench_data.plain_jobs_seconds(data, []) < bench_data.plain_jobs_seconds(data, jobs)


def test_vectorized_many_client_step_computes_what_the_sequential_one_does():
    data = bench_data.synthetic_dataset(600, 10)
    sequential = many_clients_step(data, clients=3, samples=20, vectorized=False)
    vectorized = many_clients_step(data, clients=3, samples=20, vectorized=True)
    a, b = sequential(), vectorized()
    assert set(a) == set(b) and all(a[k].shape[0] == 3 and torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert not torch.allclose(a["0.weight"][0], a["0.weight"][1])  # clients differ: each trained its own data
    timings = interleaved_medians({"sequential": sequential, "vmap": vectorized}, reps=1)
    assert set(timings) == {"sequential", "vmap"} and all(t > 0 for t in timings.values())


def test_scaffold_holds_one_control_variate_per_client_seen_and_fedavg_none():
    config = {"clients": 20, "rounds": 2, "num_train": 600, "num_test": 50, "threads": torch.get_num_threads()}
    scaffold = bench_state.state_child({**config, "drift_correction": "scaffold"})
    fedavg = bench_state.state_child({**config, "drift_correction": "none"})
    assert scaffold["parameters"] == fedavg["parameters"] == 28938
    assert scaffold["clients_with_control_variates"] == 20  # every client picked in round 1
    assert scaffold["client_control_variates_mib"] == 20 * 28938 * 4 / 2**20
    assert fedavg["clients_with_control_variates"] == 0 and fedavg["client_control_variates_mib"] == 0
    table = "\n".join(bench_state.render_state([fedavg, scaffold]))
    assert "| SCAFFOLD | 20 " in table and "| 2.2 " in table  # 20 x 28,938 floats = 2.2 MiB


def test_only_runs_the_sections_asked_for(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(bench, "run_section", lambda name, args, reps: ran.append(name) or None)
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--only", "client_state", "--only", "throughput", "--out", str(out)]) == 0
    assert ran == ["throughput", "client_state"]  # in the benchmark's order
    ran.clear()
    assert bench.main(["--quick", "--no_scaling", "--out", str(out)]) == 0
    assert ran == ["throughput", "cifar", "client_evaluation"]


@pytest.mark.slow
def test_the_workers_section_trains_the_same_model_with_one_and_two_workers():
    config = {"section": "workers", "clients": 8, "picked": 4, "rounds": 2, "num_train": 800, "num_test": 100}
    one = bench_workers.workers_child({**config, "workers": 1, "threads": 1})
    two = bench_workers.workers_child({**config, "workers": 2, "threads": 1})
    assert one["test_accuracy"] == two["test_accuracy"]  # same threads per job: the same numbers
    assert one["samples_per_s"] > 0 and two["samples_per_s"] > 0
    table = "\n".join(bench_workers.render_workers([one, two]))
    assert "| 8         | 4        | 2         | 1              |" in table
    assert [c["workers"] for c in bench_workers.workers_configs((8,), 800, 100, 2)] == list(
        range(1, usable_cores() + 1)
    )
