"""Bad inputs end in one line and a chosen exit status: huge values, same paths, full disks, crafted
checkpoints, SIGTERM; planning memory stays bounded."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
import torch

from conftest import REPO
from fedlearn.app import main
from fedlearn.comm.clock import AsyncTimeline, ClientSpeeds, ClockConfig, draw_speeds
from fedlearn.core import signals
from fedlearn.core.files import write_atomically
from fedlearn.errors import DataError
from fedlearn.loops.rounds import Rounds, run_fedavg
from fedlearn.loops.skeleton import LoopOptions
from fedlearn.loops.virtual_clock import Updates, run_async
from fedlearn.server.asynchronous import AsyncConfig, AsyncServer
from fedlearn.server.synchronous import SyncServer

TINY = ["--dataset", "mnist", "--batch_size", "50", "--init_lr", "1e-3", "--local_epoch", "1", "--num_clients", "4",
        "--num_select_clients", "2", "--model", "mlp", "--no_progress"]  # fmt: skip


def call(script, argv, capsys):
    """Run a script in-process; returns (exit status, non-empty stderr lines)."""
    try:
        code = main(script, argv)
    except SystemExit as exc:
        code = exc.code
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


HUGE = [
    ("run_federated", ["--prox_mu", "1e308"], "--prox_mu"),
    ("run_federated", ["--size_skew", "1e308"], "--size_skew"),
    ("run_federated", ["--delay", "lognormal", "--delay_spread", "1e6"], "--delay_spread"),
    ("run_federated", ["--client_rate", "1e-320"], "--client_rate"),
    ("run_federated", ["--timeout", "1e300"], "--timeout"),
    ("run_federated", ["--init_lr", "1e308"], "--init_lr"),
    ("run_federated", ["--comm_delay", "1e300"], "--comm_delay"),
    ("run_federated", ["--straggler_slowdown", "1e300"], "--straggler_slowdown"),
    ("run_federated", ["--dirichlet_alpha", "1e-300"], "--dirichlet_alpha"),
    ("run_federated", ["--clip_norm", "1e300"], "--clip_norm"),
    ("run_federated", ["--byzantine", "1", "--attack", "gaussian", "--attack_scale", "1e300"], "--attack_scale"),
    ("run_federated", ["--seed", str(2**64)], "--seed"),
    ("run_federated", ["--global_epoch", str(10**13)], "--global_epoch"),
    ("run_baseline", ["--epoch", str(10**13)], "--epoch"),
    ("run_async", ["--staleness_a", "1e300"], "--staleness_a"),
    ("run_async", ["--staleness_b", "inf"], "--staleness_b"),
    ("run_async", ["--server_lr", "1e300"], "--server_lr"),
    ("run_async", ["--max_updates", str(10**13)], "--max_updates"),
    (
        "run_async",
        ["--global_epoch", str(10**7), "--num_select_clients", str(10**6), "--num_clients", str(10**6)],
        "--max_updates",
    ),  # the default budget, global_epoch x num_select_clients, is bounded too
]


@pytest.mark.parametrize("script, argv, flag", HUGE)
def test_huge_values_are_refused_with_the_flag_and_its_range(script, argv, flag, tiny_data_dir, capsys):
    code, err = call(script, ["--data_dir", str(tiny_data_dir), *TINY, *argv], capsys)
    assert code == 2 and len(err) == 1 and flag in err[0]
    assert "must be" in err[0]


def test_help_states_every_range():
    from fedlearn.config import RANGES, build_parser

    text = " ".join(build_parser("run_async").format_help().split())
    for flag, valid in RANGES.items():
        assert f"valid: {valid}" in text, flag


def test_the_clock_stays_finite_and_positive_at_the_ends_of_the_ranges():
    from fedlearn.config import RANGES

    rng = np.random.default_rng(0)
    for delay in ("lognormal", "uniform", "straggler"):
        for rate in (RANGES["client_rate"].low, RANGES["client_rate"].high):
            config = ClockConfig(delay, rate, delay_spread=RANGES["delay_spread"].high,
                                 straggler_slowdown=RANGES["straggler_slowdown"].high)  # fmt: skip
            speeds = draw_speeds(1000, rng, config)
            for samples in (1, 60000 * 10**6):
                durations = [speeds.job_duration(c, samples) for c in range(1000)]
                assert all(0 < d < float("inf") for d in durations), (delay, rate, samples)


def test_extreme_in_range_values_give_a_finite_simulated_time(tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    extremes = ["--client_rate", "1e9", "--delay", "lognormal", "--delay_spread", "10", "--size_skew", "10",
                "--prox_mu", "1e4"]  # fmt: skip
    code, err = call("run_federated", ["--data_dir", str(tiny_data_dir), *TINY, "--global_epoch", "1", *extremes,
                                       "--save", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    final = json.loads(out.read_text())["final"]
    assert 0 < final["sim_time"] < float("inf")


@pytest.mark.parametrize("other", ["--checkpoint", "--resume"])
def test_save_and_a_checkpoint_on_one_path_are_refused(other, tiny_data_dir, tmp_path, capsys):
    path = tmp_path / "same"
    path.write_bytes(b"keep me")
    link = tmp_path / "link"
    link.symlink_to(path)
    for save in (path, link, tmp_path / "sub" / ".." / "same"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        code, err = call("run_federated", ["--data_dir", str(tiny_data_dir), *TINY, "--save", str(save),
                                           other, str(path)], capsys)  # fmt: skip
        assert code == 2 and len(err) == 1 and "--save" in err[0] and other in err[0]
    assert path.read_bytes() == b"keep me"


def test_a_failed_write_leaves_nothing_and_says_why(tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(DataError, match="--save .*out.json: cannot write \\(No space left on device\\)"):
        write_atomically(tmp_path / "out.json", b"{}", "--save")
    assert list(tmp_path.iterdir()) == []


def _tmpfs_usable(folder):
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {folder}"],
                           capture_output=True)  # fmt: skip
    return probe.returncode == 0


@pytest.mark.parametrize("flag", ["--save", "--checkpoint"])
@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_no_file(flag, tiny_data_dir, tmp_path):
    """A real 64 KiB tmpfs (in a private mount namespace), filled up before the run writes to it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _tmpfs_usable(disk):
        pytest.skip("cannot mount a tmpfs here (needs unshare -m and mount, as root)")
    target = disk / "out"
    run = [sys.executable, str(REPO / "run_federated.py"), "--data_dir", str(tiny_data_dir), *TINY,
           "--global_epoch", "1", flag, str(target)]  # fmt: skip
    script = (f"mount -t tmpfs -o size=64k tmpfs {disk} && (dd if=/dev/zero of={disk}/filler bs=1k 2>/dev/null; "
              f"{' '.join(run)}; echo rc=$? >&2; ls -A {disk} >&2)")  # fmt: skip
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-2:] == ["rc=1", "filler"], proc.stderr  # nothing but the filler is left: no file, no .tmp
    assert len(lines) == 3 and flag in lines[0] and "No space left on device" in lines[0]
    assert "Traceback" not in proc.stderr


def _checkpoint(tmp_path, tiny_data_dir, script, *extra):
    flags = ["--data_dir", str(tiny_data_dir), *TINY, *extra]
    ckpt = tmp_path / f"{script}.pt"
    assert main(script, [*flags, "--checkpoint", str(ckpt)]) == 0
    return flags, ckpt, torch.load(ckpt, weights_only=True)


def _craft(state, path, change):
    change(state)
    torch.save(state, path)


FEDERATED_CRAFTS = {
    "wrong-size weights": (lambda s: s.update(weights=s["weights"][:-1]), "shape"),
    "missing key": (lambda s: s.pop("updates"), "updates is missing"),
    "negative round": (lambda s: s.update(round=-1), "round is -1"),
    "round past the budget": (lambda s: s.update(round=99), "round is 99"),
    "NaN weights": (lambda s: s.update(weights=s["weights"] * float("nan")), "NaN"),
    "string count": (lambda s: s.update(samples_trained="many"), "samples_trained is the string 'many'"),
    "negative sim time": (lambda s: s.update(sim_time=-5.0), "sim_time is -5"),
    "bad history": (lambda s: s["record"]["history"][0].update(test_accuracy=7.0), "test_accuracy is 7"),
    "bad counter": (lambda s: s["aggregator"].update(received=-3), "aggregator.received is -3"),
    "args not a mapping": (lambda s: s.update(args=[1, 2]), "args is not a mapping"),
}


@pytest.mark.parametrize("case", FEDERATED_CRAFTS)
def test_a_crafted_federated_checkpoint_is_refused_with_one_line(case, tiny_data_dir, tmp_path, capsys):
    flags, ckpt, state = _checkpoint(tmp_path, tiny_data_dir, "run_federated", "--global_epoch", "2")
    change, expected = FEDERATED_CRAFTS[case]
    _craft(state, tmp_path / "crafted.pt", change)
    capsys.readouterr()
    code, err = call("run_federated", [*flags, "--resume", str(tmp_path / "crafted.pt")], capsys)
    assert code == 1 and len(err) == 1 and "--resume" in err[0] and expected in err[0], err


ASYNC_CRAFTS = {
    "buffer of wrong-size deltas": (
        lambda s: s["server"].update(buffer=[torch.zeros(3)], scales=[1.0], clients=[0], counts=[10]),
        "shape",
    ),  # fmt: skip
    "buffer lists of other lengths": (lambda s: s["server"].update(scales=[1.0, 2.0, 3.0]), "different lengths"),
    "client out of range": (
        lambda s: s["server"].update(buffer=[s["server"]["weights"]], scales=[1.0], clients=[99], counts=[10]),
        "clients[0] is 99",
    ),  # fmt: skip
    "NaN model in flight": (lambda s: s.update(sent_weights=[w * float("nan") for w in s["sent_weights"]]), "NaN"),
    "arrivals past the budget": (lambda s: s.update(arrivals=10**6), "arrivals is 1000000"),
    "negative version": (lambda s: s["server"].update(version=-1), "version is -1"),
    "missing in-flight model": (lambda s: s.update(sent_keys=[], sent_weights=[], sent_versions=[]), "in flight"),
}


@pytest.mark.parametrize("case", ASYNC_CRAFTS)
def test_a_crafted_async_checkpoint_is_refused_with_one_line(case, tiny_data_dir, tmp_path, capsys):
    flags, ckpt, state = _checkpoint(tmp_path, tiny_data_dir, "run_async", "--max_updates", "6",
                                     "--algorithm", "fedbuff", "--buffer_size", "4")  # fmt: skip
    change, expected = ASYNC_CRAFTS[case]
    _craft(state, tmp_path / "crafted.pt", change)
    capsys.readouterr()
    code, err = call("run_async", [*flags, "--resume", str(tmp_path / "crafted.pt")], capsys)
    assert code == 1 and len(err) == 1 and "--resume" in err[0] and expected in err[0], err


def test_signals_are_held_inside_a_critical_section():
    restore = signals.install()
    try:
        with pytest.raises(signals.Terminated):
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                reached = True  # the signal waited for the block to end
        assert reached
    finally:
        restore()


@pytest.mark.parametrize("delay", [0.0, 0.2, 0.45])
@pytest.mark.slow
def test_sigterm_exits_143_with_one_line_and_a_resumable_checkpoint(delay, tiny_data_dir, tmp_path):
    """SIGTERM at several moments after the first checkpoint: exit 143, one line, no results file, no
    temporary file, and the checkpoint left behind resumes."""
    ckpt, out = tmp_path / "c.pt", tmp_path / "out.json"
    flags = ["--data_dir", str(tiny_data_dir), *TINY, "--model", "cnn", "--max_updates", "400",
             "--checkpoint_every", "1"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(REPO / "run_async.py"), *flags, "--checkpoint", str(ckpt),
                             "--save", str(out)], stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 143 and len(lines) == 1 and "SIGTERM" in lines[0] and "--resume" in lines[0], err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    done = torch.load(ckpt, weights_only=False)["arrivals"]  # resume for 2 more updates (not 400: CI time)
    resumed = subprocess.run([sys.executable, str(REPO / "run_async.py"), *flags[:-4], "--max_updates", str(done + 2),
                              "--checkpoint_every", "1", "--resume", str(ckpt), "--save", str(out)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(out.read_text())["final"]["client_updates"] == done + 2


class _Stop(Exception):
    """Ends a loop at its first job (the test only measures what happens before)."""


def _peak_bytes(call_loop):
    tracemalloc.start()
    try:
        with pytest.raises(_Stop):
            call_loop()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_planning_a_huge_asynchronous_budget_takes_no_memory(async_parts):
    trainer, model, speeds = async_parts
    trainer.run = lambda *a, **k: (_ for _ in ()).throw(_Stop())
    server = AsyncServer(torch.zeros(3), AsyncConfig())
    budget, options = Updates(max_updates=10**6, eval_every=1, concurrency=3), LoopOptions(show_progress=False)
    peak = _peak_bytes(lambda: run_async(trainer, model, server, speeds, budget, options))
    assert peak < 5_000_000  # a planned list would take ~200 MB per million jobs


def test_a_huge_number_of_rounds_is_not_drawn_ahead(async_parts):
    trainer, model, speeds = async_parts

    def stop(task, progress):
        raise _Stop()

    budget, options = Rounds(rounds=10**6, num_select=2), LoopOptions(show_progress=False)
    peak = _peak_bytes(lambda: run_fedavg(trainer, model, SyncServer(torch.zeros(3)), speeds, budget, options, stop))
    assert peak < 5_000_000


def test_the_incremental_timeline_keeps_only_the_jobs_in_flight():
    speeds = ClientSpeeds(rates=np.array([100.0, 30.0, 50.0, 70.0, 20.0]))
    timeline = AsyncTimeline(speeds, [100] * 5, 3, np.random.default_rng(0))
    for _ in range(10_000):
        timeline.next_arrival()
        assert len(timeline.models_in_use()) <= 3


@pytest.fixture()
def async_parts():
    class FakeTrainer:
        partitions = [torch.arange(10)] * 5
        config = type("C", (), {"epochs": 1})()
        data = None
        stragglers = None

        def num_samples(self, client):
            return 10

        def num_batches(self, client, job_key=None):
            return 1

    return FakeTrainer(), torch.nn.Linear(1, 1), ClientSpeeds(rates=np.array([100.0, 30.0, 50.0, 70.0, 20.0]))


def test_a_flooding_worker_is_dropped_by_its_listener_and_never_fills_the_inbox(monkeypatch):
    """A worker sending more updates than it was given jobs is reported lost at the first extra one; nothing
    it sends after that is read, so the server's queue holds at most the updates it asked for."""
    from fedlearn.distributed import inbox as distributed
    from fedlearn.distributed import wire

    received, asked = [], threading.Event()

    def endless(src, dim):
        asked.wait(5.0)  # the worker answers jobs it was sent: none before the server expects them
        received.append(src)
        return wire.WireUpdate(src, 0, len(received), 0, 1, 1, 1, 0.1, torch.zeros(dim))

    monkeypatch.setattr(wire, "recv_update", endless)
    inbox = distributed.Inbox([1], dim=1000)
    inbox.expect(1, 2)
    asked.set()
    events = [inbox.get(5.0) for _ in range(3)]
    time.sleep(0.2)
    assert [type(e).__name__ for e in events] == ["WireUpdate", "WireUpdate", "Lost"]
    assert events[2].rank == 1 and "protocol violation" in events[2].reason and events[2].rejected == 1
    assert len(received) == 3 and inbox.get(0.1) is None  # nothing after the extra update was read
    assert inbox.join(5.0)
