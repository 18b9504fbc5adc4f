"""Metrics sinks (--log): TensorBoard event files and CSV rows read back and checked against the JSON history,
hparams, resumption without duplicate steps, interrupted runs, the server process alone, bad targets."""

import csv
import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter

from conftest import REPO
from fedlearn.app import main
from fedlearn.events.sinks.tensorboard import TAGS

TINY = ["--dataset", "mnist", "--global_epoch", "2", "--local_epoch", "1", "--num_clients", "4",
        "--num_select_clients", "2", "--init_lr", "1e-3", "--no_progress", "--client_test_frac", "0.2"]  # fmt: skip
SCALE = {"bytes_up": 1e-6, "bytes_down": 1e-6}


def events(folder):
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run(script, argv, tmp_path, name):
    path = tmp_path / f"{name}.json"
    assert main(script, [*argv, "--save", str(path)]) == 0
    return json.loads(path.read_text())


def client_mean(entry, key="client_accuracy"):
    present = [a for a in entry.get(key) or [] if a is not None]
    return sum(present) / len(present) if present else None


@pytest.mark.parametrize("script", ["run_baseline", "run_federated", "run_async"])
def test_every_logged_figure_is_the_history_s(tiny_data_dir, tmp_path, capsys, script):
    argv = ["--data_dir", str(tiny_data_dir), *TINY, "--log", f"tensorboard:{tmp_path / 'tb'}", "--log",
            f"csv:{tmp_path / 'm.csv'}", "--epoch", "2"]  # fmt: skip
    doc = run(script, argv, tmp_path, f"{script}_seed-0")
    history = doc["history"]
    board = events(tmp_path / "tb" / f"{script}_seed-0")
    for figure, tag in TAGS.items():
        expected = [(e["step"], e.get(figure)) for e in history if e.get(figure) is not None]
        if figure == "client_accuracy_mean":
            expected = [(e["step"], client_mean(e)) for e in history]
        if not expected or figure in ("client_accuracy_worst_10pct",) or figure.startswith("personal"):
            continue
        got = [(s.step, s.value) for s in board.Scalars(tag)]
        want = [(step, float(np.float32(value * SCALE.get(figure, 1.0)))) for step, value in expected]
        assert got == want, tag
    hist = board.Histograms("clients/accuracy")
    assert [h.step for h in hist] == [e["step"] for e in history]
    assert hist[-1].histogram_value.num == len([a for a in history[-1]["client_accuracy"] if a is not None])
    table = rows(tmp_path / "m.csv")
    assert [int(r["step"]) for r in table] == [e["step"] for e in history]
    for row, entry in zip(table, history):
        assert float(row["test_accuracy"]) == entry["test_accuracy"] and float(row["test_loss"]) == entry["test_loss"]
        assert math.isclose(float(row["client_accuracy_mean"]), client_mean(entry), rel_tol=1e-12)
    settings = json.loads((tmp_path / "m.settings.json").read_text())
    assert settings["script"] == script and settings["args"]["init_lr"] == 1e-3


def test_the_settings_are_tensorboard_hparams(tiny_data_dir, tmp_path, capsys):
    argv = ["--data_dir", str(tiny_data_dir), *TINY, "--log", f"tensorboard:{tmp_path}"]
    run("run_federated", argv, tmp_path, "hp")
    content = events(tmp_path / "hp").PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["init_lr"].number_value == 1e-3 and hparams["partition"].string_value == "iid"
    assert hparams["no_progress"].number_value == 1 and hparams["target_acc"].string_value == "None"  # (a switch: 1)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert {m.name.tag for m in experiment.experiment.metric_infos} >= {"test/accuracy", "time/simulated_s"}


def test_a_resumed_run_continues_the_curves_without_a_step_twice(tiny_data_dir, tmp_path, capsys):
    checkpoint = tmp_path / "c.pt"
    base = ["--data_dir", str(tiny_data_dir), *TINY[:-2], "--log", f"tensorboard:{tmp_path / 'tb'}", "--log",
            f"csv:{tmp_path / 'm.csv'}"]  # fmt: skip
    assert main("run_federated", [*base, "--checkpoint", str(checkpoint)]) == 0  # rounds 1-2, checkpoint after 2
    # the first part had gone on to log round 3 before it died (after its last checkpoint)
    with SummaryWriter(str(tmp_path / "tb" / "c")) as writer:
        writer.add_scalar("test/accuracy", 0.123, 3)
    with open(tmp_path / "m.csv", "a", newline="") as handle:
        csv.writer(handle).writerow([3, "", "", 0.123])
    argv = [*base, "--global_epoch", "4", "--resume", str(checkpoint), "--save", str(tmp_path / "r.json")]
    assert main("run_federated", argv) == 0
    history = json.loads((tmp_path / "r.json").read_text())["history"]
    got = [(s.step, s.value) for s in events(tmp_path / "tb" / "c").Scalars("test/accuracy")]
    assert got == [(e["step"], float(np.float32(e["test_accuracy"]))) for e in history]  # steps 1-4, once each
    table = rows(tmp_path / "m.csv")
    assert [(int(r["step"]), float(r["test_accuracy"])) for r in table] == [(e["step"], e["test_accuracy"])
                                                                            for e in history]  # fmt: skip


@pytest.mark.slow
def test_an_interrupted_run_leaves_every_figure_so_far(tiny_data_dir, tmp_path):
    argv = ["--data_dir", str(tiny_data_dir), *TINY, "--global_epoch", "200", "--log",
            f"tensorboard:{tmp_path / 'tb'}", "--log", f"csv:{tmp_path / 'm.csv'}", "--checkpoint",
            str(tmp_path / "run.pt")]  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(REPO / "run_federated.py"), *argv], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(rows(tmp_path / "m.csv") if (tmp_path / "m.csv").exists() else []) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, proc.stderr.read()
    table = rows(tmp_path / "m.csv")
    logged = [(s.step, s.value) for s in events(tmp_path / "tb" / "run").Scalars("test/accuracy")]
    assert len(table) >= 3 and logged[: len(table)] == [(int(r["step"]), float(np.float32(r["test_accuracy"])))
                                                        for r in table]  # fmt: skip


@pytest.mark.slow
def test_workers_log_from_the_server_alone(tiny_data_dir, tmp_path, capsys):
    argv = ["--data_dir", str(tiny_data_dir), *TINY, "--workers", "2", "--threads_per_worker", "1", "--log",
            f"csv:{tmp_path / 'm.csv'}", "--log", f"tensorboard:{tmp_path / 'tb'}"]  # fmt: skip
    doc = run("run_federated", argv, tmp_path, "w")
    assert [int(r["step"]) for r in rows(tmp_path / "m.csv")] == [e["step"] for e in doc["history"]]
    assert len(list((tmp_path / "tb").iterdir())) == 1


def test_bad_targets_are_one_line_before_training(tiny_data_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    cases = [
        (f"tensorboard:{tmp_path / 'file'}", "exists and is not a folder"),
        (f"csv:{tmp_path / 'folder'}", "is a folder, give a file path"),
        (f"tensorboard:{tmp_path / 'no' / 'such'}", "does not exist"),
        ("tensorboard:", "the tensorboard sink needs a TARGET"),
        ("wandb:x", "unknown kind 'wandb'"),
    ]
    base = ["--data_dir", str(tiny_data_dir), *TINY]
    for spec, message in cases:
        assert main("run_federated", [*base, "--log", spec]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--log" in err[0] and message in err[0], err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name))
    assert main("run_federated", [*base, "--log", f"tensorboard:{tmp_path / 'tb'}"]) == 2
    assert "pip install tensorboard" in capsys.readouterr().err
    assert not (tmp_path / "tb").exists()
