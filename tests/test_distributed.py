"""--distributed on loopback: torchrun with a server and two workers, faults, malformed updates, checkpoints."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, run_script, run_torchrun
from fedlearn.comm.codecs import QSGD, TopK

TINY = [
    "--dataset",
    "mnist",
    "--batch_size",
    "20",
    "--init_lr",
    "1e-3",
    "--global_epoch",
    "3",
    "--local_epoch",
    "1",
    "--num_clients",
    "5",
    "--num_select_clients",
    "2",
    "--no_progress",
    "--timeout",
    "60",
]
VOLATILE = ("wall_time_s", "time_breakdown_s")

pytestmark = pytest.mark.slow  # every test here starts processes


def torchrun(script, data_dir, out, *extra, nproc=3):
    """``torchrun --standalone --nproc-per-node 3 SCRIPT --distributed ...`` as the README shows."""
    return run_torchrun(script, "--data_dir", str(data_dir), "--save", str(out), *TINY, *extra, nproc=nproc)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes(script, data_dir, out, *extra, fault=None, world=3):
    """The processes torchrun would start, started by hand (so one can die without the launcher
    stopping the rest); a fault is injected through tests/dist_entry.py. Returns the server's result."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}  # fmt: skip
        if fault:
            env["FEDLEARN_TEST_FAULT"] = fault
        argv = [sys.executable, str(REPO / "tests" / "dist_entry.py"), script, "--distributed",
                "--data_dir", str(data_dir), "--save", str(out), *TINY, *extra]  # fmt: skip
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                      cwd=REPO))  # fmt: skip
    server = procs[0].communicate(timeout=300)
    for p in procs[1:]:  # a worker the server dropped may wait for its own --timeout: stop it
        try:
            p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
    return procs[0].returncode, server, [p.returncode for p in procs]


def history(doc):
    return [{k: v for k, v in e.items() if k not in VOLATILE} for e in doc["history"]]


VARIANTS = {  # each combines parts the plain FedAvg path lacks (only the server's parts and the payloads differ)
    "fedadam-topk-feedback-dp": ["--server_opt", "adam", "--compress", "topk", "--compress_ratio", "0.1",
                                 "--error_feedback", "--dp_clip", "0.5", "--dp_noise", "0.3"],
    "scaffold": ["--drift_correction", "scaffold", "--optimizer", "sgd-momentum", "--init_lr", "0.02", "--server_opt",
                 "avgm", "--server_lr", "0.5"],
    "fednova-qsgd": ["--drift_correction", "fednova", "--optimizer", "sgd", "--init_lr", "0.05", "--size_skew", "1",
                     "--compress", "qsgd", "--qsgd_levels", "4"],
}  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
def test_torchrun_federated_equals_the_simulation(variant, tiny_data_dir, tmp_path):
    flags = VARIANTS[variant]
    proc = torchrun("run_federated.py", tiny_data_dir, tmp_path / "d.json", *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "d.json").read_text())
    assert doc["run"]["processes"].startswith("3 (server + 2 workers)")
    assert [e["step"] for e in doc["history"]] == [1, 2, 3] and doc["final"]["client_updates"] == 6
    assert proc.stdout.count("Results") == 1  # only the server prints
    # the simulation with the workers' thread count (torchrun sets OMP_NUM_THREADS=1) gives the same numbers
    sim = subprocess.run([sys.executable, "run_federated.py", "--data_dir", str(tiny_data_dir), "--save",
                          str(tmp_path / "s.json"), *TINY, *flags], capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    assert history(doc) == history(json.loads((tmp_path / "s.json").read_text()))  # bit-identical


@pytest.mark.parametrize("script, extra", [("run_federated", ["--compress", "topk", "--compress_ratio", "0.05"]),
                                           ("run_async", ["--compress", "qsgd", "--algorithm", "fedbuff",
                                                          "--buffer_size", "2", "--max_updates", "6"])])  # fmt: skip
def test_the_bytes_reported_are_the_bytes_the_workers_sent(script, extra, tiny_data_dir, tmp_path):
    log = tmp_path / "sent"
    code, (out, err), _ = processes(script, tiny_data_dir, tmp_path / "b.json", *extra, fault=f"count:*:*:{log}")
    assert code == 0, err[-3000:]
    final = json.loads((tmp_path / "b.json").read_text())["final"]
    sent = [int(n) for path in tmp_path.glob("sent.*") for n in path.read_text().split()]
    assert len(sent) == final["client_updates"] and sum(sent) == final["bytes_up"]
    dim = json.loads((tmp_path / "b.json").read_text())["run"]["model parameters"]
    codec = TopK(0.05) if "topk" in extra else QSGD(16)
    assert set(sent) == {codec.payload_bytes(dim)} and final["bytes_down"] == final["client_updates"] * 4 * dim


@pytest.mark.parametrize("algorithm", ["fedasync", "fedbuff"])
def test_torchrun_async_takes_updates_as_they_come(algorithm, tiny_data_dir, tmp_path):
    step = ["--server_opt", "adam"] if algorithm == "fedbuff" else []
    proc = torchrun("run_async.py", tiny_data_dir, tmp_path / "a.json", "--algorithm", algorithm,
                    "--buffer_size", "2", "--max_updates", "8", "--eval_every", "4", *step)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = json.loads((tmp_path / "a.json").read_text())["final"]
    assert final["client_updates"] == 8 and final["lost_workers"] == []
    assert final["server_steps"] == (8 if algorithm == "fedasync" else 4)
    assert final["sim_time"] is None and 0 < final["test_accuracy"] <= 1
    assert "Lost workers" in proc.stdout
    assert final.get("server_optimizer", "").startswith("adam") == (algorithm == "fedbuff")


def test_a_killed_worker_does_not_stop_an_asynchronous_run(tiny_data_dir, tmp_path):
    code, (out, err), codes = processes("run_async", tiny_data_dir, tmp_path / "k.json", "--max_updates", "12",
                                        fault="kill:2:2")  # fmt: skip
    assert code == 0, err[-3000:]
    assert codes[2] != 0  # the worker really died
    final = json.loads((tmp_path / "k.json").read_text())["final"]
    assert final["client_updates"] == 12  # the other worker did the rest
    assert [w["rank"] for w in final["lost_workers"]] == [2] and final["lost_workers"][0]["after_updates"] < 12
    assert "Lost workers" in out and "rank 2" in out


def test_a_killed_worker_stops_a_synchronous_run_with_one_line(tiny_data_dir, tmp_path):
    code, (out, err), _ = processes("run_federated", tiny_data_dir, tmp_path / "k.json", "--num_select_clients", "5",
                                    fault="kill:2:2")  # fmt: skip
    assert code == 1 and not (tmp_path / "k.json").exists()
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "worker rank 2 lost" in lines[0] and "--resume" in lines[0]


@pytest.mark.parametrize(
    "script, fault, reason",
    [("run_federated", "nan", "non-finite"), ("run_async", "nan", "non-finite"), ("run_async", "short", "shape")],
)
def test_a_malformed_update_is_rejected_and_counted(script, fault, reason, tiny_data_dir, tmp_path):
    code, (out, err), _ = processes(script, tiny_data_dir, tmp_path / "n.json", fault=f"{fault}:1:1")
    assert code == 0, err[-3000:]
    final = json.loads((tmp_path / "n.json").read_text())["final"]
    assert final["rejected_updates"] == 1 and final["rejected_by_reason"] == {reason: 1}
    assert final["test_loss"] == final["test_loss"]  # the NaN never reached the model


@pytest.mark.parametrize("variant", ["fedadam-topk-feedback-dp", "scaffold"])  # moments, the clients' residuals,
# DP's counters and the bytes; the control variates
def test_checkpoint_then_resume_equals_an_uninterrupted_run(variant, tiny_data_dir, tmp_path):
    flags = ["--data_dir", str(tiny_data_dir), *TINY, *VARIANTS[variant]]
    whole = run_script("run_federated.py", *flags, "--global_epoch", "4", "--save", str(tmp_path / "whole.json"))
    first = run_script("run_federated.py", *flags, "--global_epoch", "2", "--checkpoint", str(tmp_path / "c.pt"))
    rest = run_script("run_federated.py", *flags, "--global_epoch", "4", "--resume", str(tmp_path / "c.pt"),
                      "--save", str(tmp_path / "resumed.json"))  # fmt: skip
    for proc in (whole, first, rest):
        assert proc.returncode == 0, proc.stderr
    a = json.loads((tmp_path / "whole.json").read_text())
    b = json.loads((tmp_path / "resumed.json").read_text())
    assert [e["step"] for e in b["history"]] == [1, 2, 3, 4]
    assert history(a) == history(b)


def test_distributed_checkpoint_resumes_with_torchrun(tiny_data_dir, tmp_path):
    ckpt = tmp_path / "d.pt"
    avgm = ("--server_opt", "avgm", "--server_lr", "0.5")  # its momentum goes in the checkpoint
    first = torchrun("run_federated.py", tiny_data_dir, tmp_path / "1.json", "--global_epoch", "2",
                     "--checkpoint", str(ckpt), *avgm)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    rest = torchrun("run_federated.py", tiny_data_dir, tmp_path / "2.json", "--global_epoch", "3",
                    "--resume", str(ckpt), *avgm)  # fmt: skip
    assert rest.returncode == 0, rest.stderr[-3000:]
    # an uninterrupted run (simulated with the workers' thread count: bit-identical, see above)
    whole = subprocess.run([sys.executable, "run_federated.py", "--data_dir", str(tiny_data_dir), "--save",
                            str(tmp_path / "3.json"), *TINY, *avgm], capture_output=True, text=True, cwd=REPO,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)  # fmt: skip
    assert whole.returncode == 0, whole.stderr
    assert history(json.loads((tmp_path / "2.json").read_text())) == history(
        json.loads((tmp_path / "3.json").read_text())
    )


def test_async_checkpoint_resume_continues_the_count(tiny_data_dir, tmp_path):
    ckpt = tmp_path / "a.pt"
    first = torchrun("run_async.py", tiny_data_dir, tmp_path / "1.json", "--max_updates", "6", "--checkpoint",
                     str(ckpt), "--checkpoint_every", "3")  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    rest = torchrun("run_async.py", tiny_data_dir, tmp_path / "2.json", "--max_updates", "10", "--resume", str(ckpt))
    assert rest.returncode == 0, rest.stderr[-3000:]
    done = json.loads((tmp_path / "2.json").read_text())
    assert done["final"]["client_updates"] == 10
    assert history(done)[:2] == history(json.loads((tmp_path / "1.json").read_text()))[:2]


def test_resume_refuses_other_settings_and_foreign_files(tiny_data_dir, tmp_path):
    ckpt = tmp_path / "c.pt"
    flags = ["--data_dir", str(tiny_data_dir), *TINY]
    assert run_script("run_federated.py", *flags, "--checkpoint", str(ckpt)).returncode == 0
    other = run_script("run_federated.py", *flags, "--resume", str(ckpt), "--init_lr", "0.01")
    assert other.returncode == 1 and "--init_lr" in other.stderr and "Traceback" not in other.stderr
    state = torch.load(ckpt, weights_only=True)
    del state["args"]["augment"]  # as a fedlearn from before --augment wrote it: it did not augment
    torch.save(state, tmp_path / "older.pt")
    older = run_script("run_federated.py", *flags, "--resume", str(tmp_path / "older.pt"), "--global_epoch", "4")
    assert older.returncode == 0, older.stderr
    augmented = run_script("run_federated.py", *flags, "--resume", str(tmp_path / "older.pt"), "--augment",
                           "crop-flip")  # fmt: skip
    assert augmented.returncode == 1 and "--augment 'none' (now 'crop-flip')" in augmented.stderr
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    junk = run_script("run_federated.py", *flags, "--resume", str(tmp_path / "junk.pt"))
    assert junk.returncode == 1 and "not a fedlearn checkpoint" in junk.stderr


def test_distributed_without_torchrun_is_one_clear_line(tiny_data_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "run_async.py", "--distributed", "--data_dir", str(tiny_data_dir)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "torchrun" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_timing_is_bounded_when_the_server_never_answers(tiny_data_dir, tmp_path):
    """A worker alone (the server never comes) gives up within --timeout instead of hanging."""
    port = free_port()
    env = {**os.environ, "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}  # fmt: skip
    began = time.monotonic()
    argv = [sys.executable, "run_federated.py", "--distributed", "--data_dir", str(tiny_data_dir), "--timeout", "5"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode != 0 and time.monotonic() - began < 60


@pytest.mark.parametrize(
    "script, extra", [("run_federated.py", []), ("run_async.py", ["--algorithm", "fedbuff", "--buffer_size", "2"])]
)
def test_two_hosts_over_a_link_with_delay_and_loss(script, extra, tiny_data_dir, tmp_path):
    """Server alone on host a, two workers on host b, 20 ms delay and 1 % loss each way (skipped where the
    machine cannot build the link: see scripts/two_host.py)."""
    from test_two_host import run_two_host

    out = tmp_path / "two.json"
    proc = run_two_host([script, "--distributed", "--data_dir", str(tiny_data_dir), "--save", str(out), *TINY, *extra],
                        nproc_a=1, nproc_b=2, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    doc = json.loads(out.read_text())
    assert doc["run"]["processes"].startswith("3 (server + 2 workers)")
    assert doc["final"]["client_updates"] == 6 and doc["final"]["rejected_updates"] == 0


def test_a_worker_cannot_speak_for_clients_of_another_worker(tiny_data_dir, tmp_path):
    """Rank 2 sends updates for rank 1's clients (0, 2, 4) under the current round's key before rank 1 answers."""
    code, (out, err), _ = processes("run_federated", tiny_data_dir, tmp_path / "f.json", "--num_select_clients", "5",
                                    fault="forge:2:1:0,2,4")  # fmt: skip
    assert code == 1 and not (tmp_path / "f.json").exists()
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "worker rank 2 broke the protocol" in lines[0] and "client 0" in lines[0]


@pytest.mark.parametrize("fault", ["replay:1:1", "claim:1:1:-5", "claim:1:2:1000000000", "flood:1:1:3000"])
def test_an_asynchronous_worker_that_breaks_the_protocol_is_dropped(fault, tiny_data_dir, tmp_path):
    code, (out, err), _ = processes("run_async", tiny_data_dir, tmp_path / "h.json", "--max_updates", "10",
                                    "--timeout", "20", fault=fault)  # fmt: skip
    assert code == 0, err[-3000:]
    doc = json.loads((tmp_path / "h.json").read_text())
    final = doc["final"]
    assert final["client_updates"] == 10  # the honest worker did the rest
    assert [w["rank"] for w in final["lost_workers"]] == [1]
    assert "protocol violation" in final["lost_workers"][0]["reason"]
    assert final["rejected_by_reason"] == {"unexpected": 1}  # the first offending update; nothing after is read
    assert all(e["samples_trained"] >= 0 for e in doc["history"])
    assert final["samples_trained"] == sum(80 * 1 for _ in range(10))  # 5 clients of 80 samples, 1 local epoch


def test_a_synchronous_false_claim_stops_the_run(tiny_data_dir, tmp_path):
    code, (out, err), _ = processes("run_federated", tiny_data_dir, tmp_path / "c.json", fault="claim:1:1:-5")
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 1 and len(lines) == 1 and "broke the protocol" in lines[0] and "-5 samples" in lines[0]


def test_a_round_whose_updates_all_claim_no_sample_does_not_crash(tiny_data_dir, tmp_path):
    code, (out, err), _ = processes("run_federated", tiny_data_dir, tmp_path / "z.json", fault="claim:*:*:0")
    assert code == 0, err[-3000:]
    doc = json.loads((tmp_path / "z.json").read_text())
    assert [e["train_loss"] for e in doc["history"]] == [None, None, None]  # no sample, no training loss
    assert doc["final"]["samples_trained"] == 0
