"""--workers N: clients train in parallel worker processes, and the numbers equal --workers 1's."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_script

TINY = ["--dataset", "mnist", "--batch_size", "20", "--init_lr", "0.05", "--optimizer", "sgd", "--local_epoch", "1",
        "--num_clients", "6", "--no_progress", "--threads_per_worker", "1", "--timeout", "60"]  # fmt: skip
VOLATILE = ("wall_time_s", "time_breakdown_s")
CASES = {  # each also exercises what its mode adds: SCAFFOLD's control variates and error-feedback residuals
    # stay on one worker per client, lognormal delays reorder the arrivals, FedBuff's buffer spans several jobs
    "fedavg": ("run_federated", ["--global_epoch", "3", "--num_select_clients", "4", "--partition", "dirichlet"]),
    "scaffold": ("run_federated", ["--global_epoch", "3", "--num_select_clients", "3", "--drift_correction",
                                   "scaffold"]),
    "fedasync": ("run_async", ["--algorithm", "fedasync", "--max_updates", "10", "--concurrency", "3", "--delay",
                               "lognormal", "--eval_every", "3"]),
    "fedbuff-topk-ef": ("run_async", ["--algorithm", "fedbuff", "--buffer_size", "2", "--max_updates", "10",
                                      "--concurrency", "4", "--delay", "lognormal", "--compress", "topk",
                                      "--compress_ratio", "0.1", "--error_feedback"]),
}  # fmt: skip


def strip(entries):
    return [{k: v for k, v in e.items() if k not in VOLATILE} for e in entries]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_two_workers_give_the_numbers_of_one(case, tiny_data_dir, tmp_path):
    script, extra = CASES[case]
    docs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.json"
        proc = run_script(f"{script}.py", "--data_dir", str(tiny_data_dir), "--save", str(out), *TINY, *extra,
                          "--workers", str(workers))  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        docs[workers] = json.loads(out.read_text())
    one, two = docs[1], docs[2]
    assert strip(one["history"]) == strip(two["history"])  # bit for bit
    final_one, final_two = ({k: v for k, v in d["final"].items() if k not in VOLATILE} for d in (one, two))
    spread = final_two.pop("worker_updates")
    assert final_one == final_two
    assert two["run"]["workers"].startswith("2 processes x 1 torch threads")
    assert len(spread) == 2 and min(spread) > 0 and sum(spread) == two["final"]["client_updates"]  # both trained


def children(pid):
    """The pids of a process's children (Linux)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
def test_a_killed_worker_is_reported_in_one_line(tiny_data_dir, tmp_path):
    out, saved = tmp_path / "k.json", tmp_path / "k.pt"
    argv = [sys.executable, str(REPO / "run_federated.py"), "--data_dir", str(tiny_data_dir), "--save", str(out),
            *TINY, "--global_epoch", "100000", "--workers", "2", "--checkpoint", str(saved)]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not saved.exists() and time.monotonic() < deadline:  # a round done: the workers are training
            time.sleep(0.2)
        servers = [c for c in children(proc.pid) if "forkserver" in Path(f"/proc/{c}/cmdline").read_text()]
        workers = [w for server in servers for w in children(server)]  # forked by the fork server
        assert saved.exists() and len(workers) == 2, "the run never got going"
        victim = workers[1]
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1 and not out.exists()
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err[-2000:]
    assert f"(pid {victim}) killed by SIGKILL" in lines[0] and "--resume" in lines[0]
    assert "Traceback" not in err
