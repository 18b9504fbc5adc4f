"""--workers N: clients train in parallel worker processes, and the numbers equal --workers 1's."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing import get_context
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_script
from fedlearn.distributed.handover import BATCH, Orders, take

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
    """The pids of a process's children (Linux; none once it is gone)."""
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def forked(pid):
    """Whether ``pid`` runs the fork server's code: the fork server, or a worker it forked (a program it runs, as
    while importing, has it only until its exec)."""
    try:
        return "forkserver" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def workers_of(pid):
    """The worker processes of run ``pid`` so far, in the order they were started (forked by its fork server)."""
    seen = [w for server in children(pid) if forked(server) for w in children(server) if forked(w)]
    time.sleep(0.01)
    return sorted(w for w in seen if forked(w))  # still so: a worker, not a program about to run


def alive(pid):
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_run(argv, **options):
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)


def end(proc, pids):
    """Whatever a test left: the run and the worker processes ``pids`` (stopped ones too) end."""
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def federated(data_dir, out, *flags):
    return [sys.executable, str(REPO / "run_federated.py"), "--data_dir", str(data_dir), "--save", str(out), *TINY,
            *flags]  # fmt: skip


def wait_for(what, seconds=120):
    """``what()`` once it is true (polled), or its last value."""
    deadline = time.monotonic() + seconds
    while not (found := what()) and time.monotonic() < deadline:
        time.sleep(0.005)
    return found


@pytest.mark.slow
def test_a_killed_worker_is_reported_in_one_line(tiny_data_dir, tmp_path):
    out, saved = tmp_path / "k.json", tmp_path / "k.pt"
    argv = federated(tiny_data_dir, out, "--global_epoch", "100000", "--workers", "2", "--checkpoint", str(saved))
    proc = start_run(argv)
    try:
        wait_for(saved.exists)  # a round done: the workers are training
        workers = workers_of(proc.pid)
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


@pytest.mark.slow
def test_a_worker_killed_while_starting_is_one_line(tiny_data_dir, tmp_path):
    """Worker 2 dies before it has its clients, while worker 1 takes the descriptors of the shared data (300 clients:
    as many tensors). Once, the thread of the server handing them out printed a traceback for worker 1 killed
    midway, as the run stopped."""
    out = tmp_path / "s.json"
    argv = federated(tiny_data_dir, out, "--num_clients", "300", "--num_select_clients", "2", "--workers", "2")
    proc, workers = start_run(argv), []
    try:
        workers = wait_for(lambda: len(workers_of(proc.pid)) == 2 and workers_of(proc.pid))
        os.kill(proc.pid, signal.SIGSTOP)  # the server waits (the workers cannot join without it) ...
        os.kill(workers[1], signal.SIGKILL)  # ... while worker 2 is killed
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
    finally:
        end(proc, workers)
    assert proc.returncode == 1 and not out.exists()
    line = f"run_federated.py: error: --workers: worker 2 of 2 (pid {workers[1]}) killed by SIGKILL while starting"
    assert err.splitlines() == [line], err[-3000:]


@pytest.mark.slow
def test_a_stopped_worker_is_named_after_the_timeout(tiny_data_dir, tmp_path):
    """A timeout closes every link of the server: the worker it reports lost first may be the healthy one."""
    out, saved = tmp_path / "t.json", tmp_path / "t.pt"
    flags = ("--global_epoch", "100000", "--workers", "2", "--checkpoint", str(saved), "--timeout", "5")
    proc, workers = start_run(federated(tiny_data_dir, out, *flags)), []
    try:
        wait_for(saved.exists)  # a round done: the workers are training
        workers = workers_of(proc.pid)
        assert saved.exists() and len(workers) == 2, "the run never got going"
        os.kill(workers[0], signal.SIGSTOP)
        _, err = proc.communicate(timeout=120)
        left = wait_for(lambda: not any(alive(w) for w in workers), seconds=10) or [w for w in workers if alive(w)]
    finally:
        end(proc, workers)
    assert proc.returncode == 1 and not out.exists()
    assert len(err.splitlines()) == 1, err[-3000:]
    assert f"worker 1 of 2 (pid {workers[0]}) did not answer within --timeout 5 s in round " in err
    assert "--resume" in err and left is True  # no worker left behind


@pytest.mark.slow
def test_ctrl_c_while_the_workers_start(tiny_data_dir, tmp_path):
    """Ctrl-C reaches every process of the terminal's group, the fork server and the workers it has started too."""
    out = tmp_path / "c.json"
    many = min(8, 4 * len(os.sched_getaffinity(0)))
    proc = start_run(federated(tiny_data_dir, out, "--workers", str(many)), start_new_session=True)
    try:
        assert wait_for(lambda: workers_of(proc.pid)), "no worker started"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        end(proc, [])
    assert proc.returncode == 130 and not out.exists()
    assert err.splitlines() == ["run_federated.py: interrupted; no results written"], err[-3000:]


def _round_trip(obj, timeout_s=30.0):
    """``obj`` handed over as the pool hands a worker its clients (here to a thread), and its orders."""
    ours, theirs = get_context("forkserver").Pipe()
    orders, got = Orders.of(obj), []
    taking = threading.Thread(target=lambda: got.append(take(theirs)))
    taking.start()
    orders.send(ours, lambda link: link.poll(timeout_s) or pytest.fail("not taken"))
    taking.join(timeout_s)
    return orders, got[0]


def test_the_clients_go_to_a_worker_with_their_shared_memory_down_its_pipe():
    tensors = [torch.full((3,), float(i)) for i in range(BATCH + 7)]  # two batches of descriptors
    orders, got = _round_trip({"tensors": tensors, "rest": "x"})
    assert len(orders.fds) == len(tensors) and b"resource_sharer" not in orders.pickled
    assert got["rest"] == "x" and all(torch.equal(a, b) for a, b in zip(got["tensors"], tensors))
    assert all(t.is_shared() for t in tensors)
