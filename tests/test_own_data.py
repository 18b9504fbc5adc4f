"""Your own model and data: models from a file or a module, arrays from an .npz or a function, natural clients,
the Python entry with arrays and a callable, and every bad input as one line."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import fedlearn
from conftest import REPO, run_script, run_torchrun, synthetic_digits
from fedlearn.app import main
from fedlearn.core.training import ClientTests
from fedlearn.data import DATASETS, arrays
from fedlearn.errors import UsageError
from fedlearn.models import MODELS

MODELS_PY = """
import math
import torch
from torch import nn

def mlp(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 16), nn.ReLU(), nn.Linear(16, num_classes))

class Bag(nn.Module):
    def __init__(self, vocabulary, num_classes):
        super().__init__()
        self.embed, self.out = nn.Embedding(vocabulary, 8), nn.Linear(8, num_classes)

    def forward(self, tokens):
        return self.out(self.embed(tokens).mean(dim=1))

def bag(input_shape, num_classes):
    return Bag(50, num_classes)

def raises(input_shape, num_classes):
    raise RuntimeError("no such layer")

def integer(input_shape, num_classes):
    return 42

def flat(input_shape, num_classes):
    return nn.Flatten()
"""
FAST = ["--global_epoch", "2", "--local_epoch", "1", "--epoch", "2", "--init_lr", "0.05", "--optimizer", "sgd",
        "--batch_size", "16", "--no_progress"]  # fmt: skip


def tabular(seed=0, n=400, clients=5, client_test=True):
    """Features whose label is a linear function's argmax; each sample belongs to one of ``clients``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 100, 6)).astype(np.float32) * 3 + 1
    y = (x @ rng.standard_normal((6, 3))).argmax(axis=1)
    ids = rng.integers(10, 10 + clients, n + 100)  # client ids need not start at 0
    out = {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:], "client_train": ids[:n]}
    return {**out, "client_test": ids[n:]} if client_test else out


@pytest.fixture
def files(tmp_path):
    """A model file, a module on the path, and .npz files of tabular features, tokens and 8-bit images."""
    (tmp_path / "usermodels.py").write_text(MODELS_PY)
    np.savez(tmp_path / "tab.npz", **tabular())
    np.savez(tmp_path / "tab-no-test-ids.npz", **tabular(client_test=False))
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 50, (300, 12))
    np.savez(tmp_path / "tokens.npz", x_train=tokens[:240], y_train=tokens[:240, 0] % 3, x_test=tokens[240:],
             y_test=tokens[240:, 0] % 3)  # fmt: skip
    (xi, yi), (xt, yt) = synthetic_digits(200, 0), synthetic_digits(60, 1)
    np.savez(tmp_path / "images.npz", x_train=xi[:, None], y_train=yi, x_test=xt[:, None], y_test=yt)
    return tmp_path


def run(script, argv, tmp_path, capsys, name="r.json"):
    out = tmp_path / name
    code = main(script, [*argv, "--save", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(out.read_text()), captured.out


def refused(script, argv, capsys):
    try:
        code = main(script, argv)
    except SystemExit as exc:
        code = exc.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


@pytest.mark.parametrize("script", ["run_baseline", "run_federated", "run_async"])
def test_a_model_from_a_file_on_tabular_arrays_with_natural_clients(files, tmp_path, capsys, script):
    argv = ["--dataset", str(files / "tab.npz"), "--model", f"{files / 'usermodels.py'}:mlp", *FAST]
    doc, out = run(script, argv, tmp_path, capsys)
    ids = tabular()["client_train"]
    assert doc["args"]["model"].endswith("usermodels.py:mlp") and doc["run"]["model parameters"] == 6 * 16 + 16 + 51
    assert doc["run"]["input (one sample)"] == "(6,) float32" and doc["run"]["classes"] == 3
    if script != "run_baseline":
        assert doc["args"]["partition"] == "natural" and doc["args"]["num_clients"] == 5
        assert doc["args"]["num_select_clients"] == 1  # a tenth of the clients, at least one
        assert doc["partition"]["sizes"] == np.bincount(ids - 10).tolist()  # in the order of the ids
    assert doc["final"]["client_accuracy"]["clients"] == 5  # each client's own test samples (client_test)
    assert "| --partition " in out or script == "run_baseline"


def test_features_default_to_logistic_regression(files, tmp_path, capsys):
    doc, _ = run("run_baseline", ["--dataset", str(files / "tab.npz"), *FAST], tmp_path, capsys)
    assert doc["args"]["model"] == "logreg" and doc["run"]["model parameters"] == 6 * 3 + 3


def test_a_model_from_an_importable_module(files, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(files))
    doc, _ = run("run_federated", ["--dataset", str(files / "tab.npz"), "--model", "usermodels:mlp", *FAST], tmp_path,
                 capsys)  # fmt: skip
    assert doc["args"]["model"] == "usermodels:mlp" and doc["final"]["client_updates"] == 2


def test_token_sequences_with_an_embedding_model(files, tmp_path, capsys):
    argv = ["--dataset", str(files / "tokens.npz"), "--model", f"{files / 'usermodels.py'}:bag", *FAST]
    doc, _ = run("run_federated", argv, tmp_path, capsys)
    assert doc["run"]["input (one sample)"] == "(12,) int64" and doc["args"]["partition"] == "iid"
    assert doc["run"]["normalization (mean, std)"].startswith("none")


def test_eight_bit_images_use_a_builtin_model_and_exact_normalization(files, tmp_path, capsys):
    doc, _ = run("run_baseline", ["--dataset", str(files / "images.npz"), *FAST], tmp_path, capsys)
    assert doc["args"]["model"] == "cnn"  # the first built-in model that takes (1, 28, 28)
    xi, _ = synthetic_digits(200, 0)
    assert doc["run"]["normalization (mean, std)"] == f"{xi.mean() / 255:.4f}, {xi.std(ddof=1) / 255:.4f}"


def test_float_inputs_are_standardized_per_feature_unless_asked_not_to():
    raw = tabular()
    data = arrays.to_dataset(arrays.check_arrays(raw, "t"), "t", arrays.describe(arrays.check_arrays(raw, "t"), "t"))
    x = raw["x_train"].astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0, ddof=1)
    assert np.allclose(data.train_x.numpy(), (x - mean) / std, atol=1e-6)
    assert data.train_x.dtype == torch.float32 and np.allclose(data.test_x.numpy(), (raw["x_test"] - mean) / std,
                                                               atol=1e-5)  # fmt: skip
    again = arrays.to_dataset(arrays.check_arrays(raw, "t"), "t", arrays.describe(arrays.check_arrays(raw, "t"), "t"))
    assert torch.equal(again.train_x, data.train_x)  # the same bits every time
    checked = arrays.check_arrays(raw, "t")
    raw_kept = arrays.to_dataset(checked, "t", arrays.describe(checked, "t"), normalize=False)
    assert np.array_equal(raw_kept.train_x.numpy(), raw["x_train"])


def test_clients_test_samples_are_found_by_id():
    tests = ClientTests.by_id(torch.arange(6.0)[:, None], torch.zeros(6, dtype=torch.long),
                              torch.tensor([30, 10, 99, 20, 10, 30]), torch.tensor([10, 20, 30]))  # fmt: skip
    assert tests.owner.tolist() == [2, 0, 1, 0, 2] and tests.x.squeeze(1).tolist() == [0, 1, 3, 4, 5]
    assert tests.num_clients == 3  # id 99 has no client: left out


def test_natural_clients_without_their_test_ids_have_no_per_client_figures(files, tmp_path, capsys):
    argv = ["--dataset", str(files / "tab-no-test-ids.npz"), "--model", f"{files / 'usermodels.py'}:mlp", *FAST]
    doc, _ = run("run_federated", argv, tmp_path, capsys)
    assert "client_accuracy" not in doc["final"] and doc["args"]["partition"] == "natural"
    held, _ = run("run_federated", [*argv, "--client_test_frac", "0.2"], tmp_path, capsys, "held.json")
    assert held["final"]["client_accuracy"]["clients"] == 5  # held out from each client's samples instead


def test_the_python_entry_with_arrays_and_a_callable_equals_the_command_line(files, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(files))
    import usermodels

    argv = ["--dataset", str(files / "tab.npz"), "--model", "usermodels:mlp", *FAST]
    cli, _ = run("run_federated", argv, tmp_path, capsys)
    flags = {"global_epoch": 2, "local_epoch": 1, "init_lr": 0.05, "optimizer": "sgd", "batch_size": 16,
             "no_progress": True}  # fmt: skip
    api = fedlearn.run("run_federated", dataset=tabular(), model=usermodels.mlp, **flags)
    assert api["args"]["model"] == "usermodels:mlp" and api["args"]["dataset"] == "python:arrays"
    assert [e["test_loss"] for e in api["history"]] == [e["test_loss"] for e in cli["history"]]
    assert api["final"]["client_accuracy"] == cli["final"]["client_accuracy"]
    assert "python:arrays" not in DATASETS.entries and "usermodels:mlp" not in MODELS.entries  # nothing kept
    assert not arrays._READ and not arrays._RESOLVED
    lam = fedlearn.run("run_baseline", dataset=tabular(), model=lambda input_shape, num_classes: usermodels.mlp(
        input_shape, num_classes), epoch=1, no_progress=True)  # fmt: skip
    assert lam["args"]["model"].startswith("python:")
    with pytest.raises(UsageError, match="worker processes by its importable name"):
        fedlearn.run("run_federated", dataset=tabular(), model=lambda **kw: None, workers=2)


BAD_MODELS = [
    ("nosuchmodule:f", "--model nosuchmodule:f: no module named nosuchmodule"),
    ("{files}/nope.py:f", "no such file"),
    ("{files}/usermodels.py:missing", "has no function missing"),
    ("{files}/broken.py:f", "failed to import (ZeroDivisionError: division by zero)"),
    ("{files}/usermodels.py:raises", "calling it raised RuntimeError: no such layer"),
    ("{files}/usermodels.py:integer", "returned int, not a torch.nn.Module"),
    ("{files}/usermodels.py:flat", "to (2, 6), not (2, 3) logits"),
    ("resnet", "--model: invalid choice 'resnet'"),
]


@pytest.mark.parametrize("spec, message", BAD_MODELS)
def test_a_bad_model_is_one_line(files, capsys, spec, message):
    (files / "broken.py").write_text("x = 1 / 0\n")
    code, err = refused("run_federated", ["--dataset", str(files / "tab.npz"), "--model", spec.format(files=files),
                                          *FAST], capsys)  # fmt: skip
    assert code == 2 and len(err) == 1 and message in err[0] and err[0].startswith("run_federated.py: error: --model")


def _bad(name):
    good = tabular()
    changes = {
        "missing": lambda d: {k: v for k, v in d.items() if k != "y_test"},
        "lengths": lambda d: {**d, "y_train": d["y_train"][:-1]},
        "float labels": lambda d: {**d, "y_train": d["y_train"].astype(np.float32)},
        "negative labels": lambda d: {**d, "y_test": d["y_test"] - 5},
        "nan": lambda d: {**d, "x_train": np.where(np.arange(len(d["x_train"]))[:, None] == 3, np.nan, d["x_train"])},
        "inf": lambda d: {**d, "x_test": d["x_test"] * np.inf},
        "empty": lambda d: {**d, "x_test": d["x_test"][:0], "y_test": d["y_test"][:0]},
        "clients": lambda d: {**d, "client_train": d["client_train"][:10]},
        "object": lambda d: {**d, "x_train": np.array([object()] * len(d["y_train"]))},
        "shapes": lambda d: {**d, "x_test": d["x_test"][:, :4]},
    }
    return changes[name](good)


BAD_ARRAYS = [("missing", "has no array y_test"), ("lengths", "y_train has 399 entries for 400 samples"),
              ("float labels", "y_train must be one integer per sample"), ("negative labels", "outside 0..C-1"),
              ("nan", "x_train holds NaN or infinite values"), ("inf", "x_test holds NaN or infinite values"),
              ("empty", "x_test must hold at least one sample"), ("clients", "client_train has 10 entries for 400"),
              ("object", "holds a pickled object"),
              ("shapes", "x_train's samples are (6,), x_test's (4,)")]  # fmt: skip


@pytest.mark.parametrize("name, message", BAD_ARRAYS)
def test_bad_arrays_are_one_line_and_write_nothing(files, tmp_path, capsys, name, message):
    bad = files / "bad.npz"
    np.savez(bad, **_bad(name))
    out = tmp_path / "out.json"
    code, err = refused("run_federated", ["--dataset", str(bad), "--model", f"{files / 'usermodels.py'}:mlp",
                                          "--save", str(out), *FAST], capsys)  # fmt: skip
    assert code == 2 and len(err) == 1 and message in err[0] and f"--dataset {bad}" in err[0], err
    assert not out.exists()


def test_arrays_from_a_function_and_its_failures(files, tmp_path, capsys):
    (files / "userdata.py").write_text("import numpy as np\nfrom test_own_data import tabular\n"
                                       "def good():\n    return tabular()\n"
                                       "def bad():\n    return [1, 2]\n")  # fmt: skip
    sys.path.insert(0, str(REPO / "tests"))
    try:
        doc, _ = run("run_federated", ["--dataset", f"{files / 'userdata.py'}:good", "--model",
                                       f"{files / 'usermodels.py'}:mlp", *FAST], tmp_path, capsys)  # fmt: skip
        code, err = refused("run_federated", ["--dataset", f"{files / 'userdata.py'}:bad", *FAST], capsys)
    finally:
        sys.path.remove(str(REPO / "tests"))
    assert doc["args"]["num_clients"] == 5 and doc["final"]["client_accuracy"]["clients"] == 5
    assert code == 2 and "expected a mapping of arrays, got list" in err[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--partition", "natural", "--dataset", "{files}/tokens.npz", "--model", "{files}/usermodels.py:bag"],
            "--partition natural:",
        ),
        (
            ["--num_clients", "3", "--dataset", "{files}/tab.npz", "--model", "{files}/usermodels.py:mlp"],
            "--num_clients 3: the data's samples belong to 5",
        ),
        (
            ["--client_test_frac", "0.2", "--dataset", "{files}/tab.npz", "--model", "{files}/usermodels.py:mlp"],
            "--client_test_frac: the data give each",
        ),
        (["--dataset", "{files}/tab.npz", "--model", "cnn"], "--model cnn takes 28x28 greyscale images"),
        (["--dataset", "{files}/tokens.npz"], "--model: no built-in model takes inputs of shape (12,)"),
        (["--dataset", "nosuch.npz"], "--dataset nosuch.npz: no such file"),
        (["--dataset", "cifar-100"], "--dataset: invalid choice 'cifar-100'"),
    ],
)
def test_bad_combinations_with_own_data(files, capsys, argv, message):
    argv = [a.format(files=files) for a in argv]
    code, err = refused("run_federated", [*argv, *FAST], capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err


@pytest.mark.slow
def test_workers_and_resumption_equal_the_simulation_with_a_user_model(files, tmp_path):
    argv = ["--dataset", str(files / "tab.npz"), "--model", f"{files / 'usermodels.py'}:mlp", *FAST, "--global_epoch",
            "3", "--num_select_clients", "2", "--threads_per_worker", "1"]  # fmt: skip
    runs = {}
    for name, extra in (("one", []), ("two", ["--workers", "2"]), ("first", ["--global_epoch", "2", "--checkpoint",
                                                                              str(tmp_path / "c.pt")])):  # fmt: skip
        proc = run_script("run_federated.py", *argv, *extra, "--save", str(tmp_path / f"{name}.json"))
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads((tmp_path / f"{name}.json").read_text())
    proc = run_script("run_federated.py", *argv, "--resume", str(tmp_path / "c.pt"), "--save", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads((tmp_path / "r.json").read_text())
    figures = lambda doc: [(e["step"], e["test_accuracy"], e["test_loss"], e.get("client_accuracy"))  # noqa: E731
                           for e in doc["history"]]  # fmt: skip
    assert figures(runs["two"]) == figures(runs["one"]) == figures(resumed)
    other = run_script("run_federated.py", *argv[:2], "--model", f"{files / 'usermodels.py'}:bag", *argv[4:],
                       "--resume", str(tmp_path / "c.pt"))  # fmt: skip
    assert other.returncode != 0 and "--model" in other.stderr  # the checkpoint records the model


@pytest.mark.slow
def test_distributed_equals_the_simulation_with_a_user_model(files, tmp_path):
    argv = ["--dataset", str(files / "tab.npz"), "--model", f"{files / 'usermodels.py'}:mlp", *FAST, "--timeout",
            "60"]  # fmt: skip
    assert run_script("run_federated.py", *argv, "--save", str(tmp_path / "sim.json")).returncode == 0
    proc = run_torchrun("run_federated.py", *argv, "--save", str(tmp_path / "dist.json"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    sim, dist = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("sim", "dist"))
    assert [e["test_loss"] for e in dist["history"]] == [e["test_loss"] for e in sim["history"]]


@pytest.mark.slow
def test_the_examples_run(tmp_path):
    api = subprocess.run([sys.executable, "examples/own_data_api.py", "--rounds", "2"], capture_output=True,
                         text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert api.returncode == 0, api.stderr
    assert "centralized" in api.stdout and "FedAsync" in api.stdout
    cli = subprocess.run(["sh", "examples/own_data_cli.sh", str(tmp_path / "out"), "2"], capture_output=True,
                         text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "Cost of federation against baseline" in cli.stdout
    api_rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in api.stdout.splitlines()[2:]}
    accuracy_row = next(line for line in cli.stdout.splitlines() if line.startswith("| test accuracy (%)"))
    assert [cell.strip() for cell in accuracy_row.split("|")[2:5]] == [
        f"{float(api_rows[name]):.2f}" for name in ("centralized", "FedAvg", "FedAsync")
    ]  # the command line and the Python entry: the same numbers
