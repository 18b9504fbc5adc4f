"""A part of each kind defined here, in the test, and registered for it alone: a model, a dataset whose samples
carry their client, a local algorithm that keeps state per client, a metrics sink. Each one's flags reach
``--help``, validation, the Hyperparameters table, the JSON's ``args`` and the checkpoint's identity, and the part
itself gets them, with no edit to the command line, configuration or checkpoint code."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from conftest import synthetic_digits
from fedlearn.app import main
from fedlearn.client.algorithms import LOCAL_ALGORITHMS, LocalAlgorithm
from fedlearn.client.objectives import Plain
from fedlearn.config import build_parser
from fedlearn.core.client_state import from_per_client, per_client
from fedlearn.data import DATASETS, Dataset, DatasetInfo
from fedlearn.data.dataset import image_dataset
from fedlearn.events import Listener, RunStart
from fedlearn.events.sinks import SINKS, SinkKind
from fedlearn.models import MODELS, ModelInfo
from fedlearn.registry import Entry, Flag, Range

TINY = ["--dataset", "mnist", "--global_epoch", "2", "--local_epoch", "1", "--num_clients", "4",
        "--num_select_clients", "2", "--init_lr", "1e-3", "--no_progress"]  # fmt: skip


def call(script, argv, capsys):
    """Run a script in-process; returns (exit status, stdout, stderr lines)."""
    try:
        code = main(script, argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def hyperparameters(out: str) -> str:
    return out.split("Results")[0]


def run_ok(script, argv, tmp_path, capsys, name="r.json"):
    code, out, err = call(script, [*argv, "--save", str(tmp_path / name)], capsys)
    assert code == 0, err
    return out, json.loads((tmp_path / name).read_text())


# --- (a) a model with a flag of its own ---------------------------------------------------------------------------


def toy_mlp(num_classes: int, toy_hidden: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, toy_hidden), nn.ReLU(), nn.Linear(toy_hidden, num_classes))


@pytest.fixture
def toy_model():
    flag = Flag("toy_hidden", 16, int, count=True, help="hidden units of the test's MLP")
    with MODELS.registered(Entry("toy-mlp", toy_mlp, "the test's MLP", flags=(flag,), info=ModelInfo((1, 28, 28)))):
        yield
    assert "toy-mlp" not in MODELS


@pytest.mark.parametrize("script", ["run_baseline", "run_federated", "run_async"])
def test_a_models_flag_is_in_help(toy_model, script):
    text = build_parser(script).format_help()
    assert "--toy_hidden" in text and "toy-mlp" in text


def test_a_models_flag_is_validated(toy_model, tiny_data_dir, capsys):
    code, _, err = call("run_federated", ["--data_dir", str(tiny_data_dir), *TINY, "--model", "toy-mlp",
                                          "--toy_hidden", "0"], capsys)  # fmt: skip
    assert code == 2 and len(err) == 1 and "--toy_hidden" in err[0]


def test_a_model_gets_its_flag_and_the_run_shows_and_saves_it(toy_model, tiny_data_dir, tmp_path, capsys):
    argv = ["--data_dir", str(tiny_data_dir), *TINY, "--model", "toy-mlp", "--toy_hidden", "8"]
    out, doc = run_ok("run_federated", argv, tmp_path, capsys)
    assert doc["args"]["toy_hidden"] == 8 and doc["args"]["model"] == "toy-mlp"
    assert doc["run"]["model parameters"] == 784 * 8 + 8 + 8 * 10 + 10  # the factory was given --toy_hidden 8
    table = hyperparameters(out)
    assert "| --toy_hidden " in table and "| --model " in table
    _, plain = run_ok("run_federated", ["--data_dir", str(tiny_data_dir), *TINY], tmp_path, capsys, "plain.json")
    assert plain["args"]["toy_hidden"] == 16  # every flag is in args; the table shows the chosen part's flags only


def test_a_models_flag_is_part_of_the_checkpoints_identity(toy_model, tiny_data_dir, tmp_path, capsys):
    argv = ["--data_dir", str(tiny_data_dir), *TINY, "--model", "toy-mlp", "--toy_hidden", "8"]
    code, _, err = call("run_federated", [*argv, "--checkpoint", str(tmp_path / "c.pt")], capsys)
    assert code == 0, err
    code, _, err = call("run_federated", [*argv[:-1], "4", "--resume", str(tmp_path / "c.pt")], capsys)
    assert code == 1 and "made with other settings: --toy_hidden 8 (now 4)" in err[-1]


def test_a_model_that_does_not_take_the_datasets_images_is_refused(tiny_data_dir, capsys):
    wide = Entry("toy-wide", toy_mlp, "takes 32x32 colour images", info=ModelInfo((3, 32, 32)))
    with MODELS.registered(wide):
        code, _, err = call("run_baseline", ["--data_dir", str(tiny_data_dir), "--dataset", "mnist", "--model",
                                             "toy-wide"], capsys)  # fmt: skip
    assert code == 2 and "--model toy-wide takes 32x32 colour images" in err[0]


# --- (b) a dataset whose samples carry their client ---------------------------------------------------------------


class WritersSource:
    """Synthetic digits by ``toy_writers`` writers: sample ``i`` is by writer ``i mod toy_writers``."""

    def folder(self, data_dir, toy_writers):
        return Path(data_dir)

    def prepare(self, data_dir, download_allowed, toy_writers):
        return f"made by the test for {toy_writers} writers"

    def load(self, data_dir, toy_writers):
        train, test = (synthetic_digits(n, seed) for n, seed in ((300, 0), (100, 1)))
        info = DATASETS["toy-writers"].info
        splits = [(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).long()) for x, y in (train, test)]
        data = image_dataset("toy-writers", info, *splits, "the test")
        return Dataset(**{**vars(data), "train_clients": torch.arange(300) % toy_writers})


@pytest.fixture
def writers():
    flag = Flag("toy_writers", 4, int, group="data", count=True, help="writers of the test's digits")
    info = DatasetInfo("Toy writers", (1, 28, 28), client_ids=True)
    with DATASETS.registered(Entry("toy-writers", WritersSource(), "the test's digits", flags=(flag,), info=info)):
        yield


def test_a_dataset_with_client_ids_gives_the_natural_clients(writers, tmp_path, capsys):
    argv = ["--data_dir", str(tmp_path), "--dataset", "toy-writers", "--toy_writers", "5", "--partition", "natural",
            "--num_clients", "5", "--num_select_clients", "2", "--global_epoch", "1", "--local_epoch", "1",
            "--no_progress"]  # fmt: skip
    out, doc = run_ok("run_federated", argv, tmp_path, capsys)
    assert doc["partition"]["sizes"] == [60] * 5 and doc["args"]["toy_writers"] == 5
    assert "made by the test for 5 writers" in doc["run"]["dataset source"]
    table = hyperparameters(out)
    assert "| --toy_writers " in table and "| --partition " in table and "natural" in table
    assert "--toy_writers" in build_parser("run_async").format_help()


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--dataset", "toy-writers", "--toy_writers", "0"], "--toy_writers"),
        (["--dataset", "toy-writers", "--partition", "natural", "--num_clients", "3"], "--num_clients"),
        (["--dataset", "mnist", "--partition", "natural"], "--partition natural"),
    ],
)
def test_a_natural_partition_is_checked(writers, tiny_data_dir, argv, flag, capsys):
    code, _, err = call("run_federated", ["--data_dir", str(tiny_data_dir), "--num_select_clients", "2", *argv],
                        capsys)  # fmt: skip
    assert code == 2 and len(err) == 1 and flag in err[0]


def test_a_datasets_flag_is_part_of_the_checkpoints_identity(writers, tmp_path, capsys):
    argv = ["--data_dir", str(tmp_path), "--dataset", "toy-writers", "--partition", "natural", "--num_clients", "4",
            "--num_select_clients", "2", "--global_epoch", "1", "--local_epoch", "1", "--no_progress"]  # fmt: skip
    assert call("run_federated", [*argv, "--checkpoint", str(tmp_path / "c.pt")], capsys)[0] == 0
    code, _, err = call("run_federated", [*argv, "--toy_writers", "5", "--num_clients", "5", "--resume",
                                          str(tmp_path / "c.pt")], capsys)  # fmt: skip
    assert code == 1 and "--toy_writers 4 (now 5)" in err[-1]


# --- (c) a local algorithm that keeps state per client ------------------------------------------------------------


class Memory(Plain):
    """Each client is pulled toward the weights its own last job ended with (``pull``: the strength)."""

    def __init__(self, pull: float) -> None:
        self.pull, self.memory, self.anchor = pull, {}, None

    def start(self, model: nn.Module, job: Any) -> None:
        own = self.memory.get(job.client)
        self.anchor = None if own is None else torch.split(own, [p.numel() for p in model.parameters()])

    def adjust_gradients(self, params: list[nn.Parameter]) -> None:
        if self.anchor is not None:
            with torch.no_grad():
                for param, anchor in zip(params, self.anchor):
                    param.grad.add_(param - anchor.view_as(param), alpha=self.pull)

    def finish(self, job: Any, trained: torch.Tensor, steps: int) -> None:
        self.memory[job.client] = trained.detach().clone()

    def state(self) -> dict[str, Any]:
        return {"toy_memory": per_client(self.memory)}

    def restore(self, state: dict[str, Any]) -> None:
        self.memory = from_per_client(state["toy_memory"])


@pytest.fixture
def memory():
    flag = Flag("toy_pull", 0.0, float, group="federation", valid=Range(0, 1e3), help="pull toward one's own weights")
    algorithm = LocalAlgorithm(lambda config: Memory(config.flags["toy_pull"]), client_state="toy_memory",
                               state_name="memory")  # fmt: skip
    with LOCAL_ALGORITHMS.registered(Entry("toy-memory", algorithm, "the test's memory", flags=(flag,))):
        yield


MEMORY = [*TINY[:2], "--global_epoch", "3", *TINY[4:], "--num_select_clients", "3", "--drift_correction",
          "toy-memory", "--toy_pull", "50"]  # fmt: skip


def test_a_local_algorithms_state_is_kept_checkpointed_and_resumed(memory, tiny_data_dir, tmp_path, capsys):
    argv = ["--data_dir", str(tiny_data_dir), *MEMORY]
    out, whole = run_ok("run_federated", argv, tmp_path, capsys, "whole.json")
    assert whole["args"]["toy_pull"] == 50 and "| --toy_pull " in hyperparameters(out)
    _, plain = run_ok("run_federated", [*argv[:-4]], tmp_path, capsys, "plain.json")
    assert plain["final"]["test_loss"] != whole["final"]["test_loss"]  # the state changes the training
    first = [*argv, "--global_epoch", "2", "--checkpoint", str(tmp_path / "c.pt")]
    assert call("run_federated", first, capsys)[0] == 0
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert saved["toy_memory"]["clients"] and all(v.numel() == 28938 for v in saved["toy_memory"]["values"])
    _, resumed = run_ok("run_federated", [*argv, "--resume", str(tmp_path / "c.pt")], tmp_path, capsys, "rest.json")
    steps = [(e["step"], e["test_accuracy"], e["test_loss"]) for e in resumed["history"]]
    assert steps == [(e["step"], e["test_accuracy"], e["test_loss"]) for e in whole["history"]]


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--toy_pull", "-1"], "--toy_pull"),
        (["--workers", "2", "--checkpoint", "c.pt"], "--workers"),  # the state would live on the workers
        (["--toy_pull", "2", "--resume", "c.pt"], "--toy_pull"),  # identity: made with --toy_pull 50
    ],
)
def test_a_local_algorithms_flags_are_checked(memory, tiny_data_dir, tmp_path, capsys, argv, flag, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["--data_dir", str(tiny_data_dir), *MEMORY]
    if "--resume" in argv:
        assert call("run_federated", [*base, "--checkpoint", "c.pt"], capsys)[0] == 0
    code, _, err = call("run_federated", [*base, *argv], capsys)
    assert code in (1, 2) and flag in err[-1]
    assert "--toy_pull" in build_parser("run_federated").format_help()


# --- (d) a metrics sink ---------------------------------------------------------------------------------------------


class Lines(Listener):
    """Writes every ``every``-th evaluation's entry as a JSON line."""

    def __init__(self, path: str, every: int) -> None:
        self.path, self.every, self.file = path, every, None

    def on_start(self, run: RunStart) -> None:
        self.file = open(self.path, "w")  # noqa: SIM115

    def on_evaluation(self, entry: dict[str, Any]) -> None:
        if entry["step"] % self.every == 0:
            self.file.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@pytest.fixture
def lines_sink():
    flag = Flag("toy_every", 1, int, group="output", count=True, setting=False, resumable=True, help="log every n-th")
    kind = SinkKind(lambda target, flags: Lines(target, flags["toy_every"]), lambda target: None)
    with SINKS.registered(Entry("lines", kind, "FILE (JSON lines)", flags=(flag,))):
        yield


def test_a_sink_streams_the_history_and_its_flag_is_shown(lines_sink, tiny_data_dir, tmp_path, capsys):
    argv = ["--data_dir", str(tiny_data_dir), *TINY, "--global_epoch", "4", "--log", f"lines:{tmp_path / 'l.jsonl'}",
            "--toy_every", "2"]  # fmt: skip
    out, doc = run_ok("run_federated", argv, tmp_path, capsys)
    logged = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert logged == [e for e in doc["history"] if e["step"] % 2 == 0] and len(logged) == 2
    assert doc["args"]["toy_every"] == 2 and doc["args"]["log"] == [f"lines:{tmp_path / 'l.jsonl'}"]
    assert "| --toy_every " in hyperparameters(out) and "--toy_every" in build_parser("run_baseline").format_help()


def test_a_sinks_flags_are_checked_and_may_change_on_resume(lines_sink, tiny_data_dir, tmp_path, capsys):
    base = ["--data_dir", str(tiny_data_dir), *TINY, "--log", f"lines:{tmp_path / 'l.jsonl'}"]
    code, _, err = call("run_federated", [*base, "--toy_every", "0"], capsys)
    assert code == 2 and "--toy_every" in err[0]
    code, _, err = call("run_federated", [*base, "--log", "nosuch:x"], capsys)
    assert code == 2 and "--log" in err[0] and "unknown kind 'nosuch'" in err[0]
    assert call("run_federated", [*base, "--global_epoch", "1", "--checkpoint", str(tmp_path / "c.pt")], capsys)[0] == 0
    code, _, err = call("run_federated", [*base, "--toy_every", "3", "--resume", str(tmp_path / "c.pt")], capsys)
    assert code == 0, err  # an output option: a resumed run may change it


def test_the_csv_sink_writes_the_history(tiny_data_dir, tmp_path, capsys):
    csv_path = tmp_path / "m.csv"
    argv = ["--data_dir", str(tiny_data_dir), *TINY, "--log", f"csv:{csv_path}"]
    _, doc = run_ok("run_async", argv, tmp_path, capsys)
    rows = csv_path.read_text().splitlines()
    header, values = rows[0].split(","), [dict(zip(rows[0].split(","), r.split(","))) for r in rows[1:]]
    assert header[:5] == ["step", "sim_time", "wall_time_s", "test_accuracy", "test_loss"]
    assert [int(v["step"]) for v in values] == [e["step"] for e in doc["history"]]
    assert [float(v["test_loss"]) for v in values] == [e["test_loss"] for e in doc["history"]]
    assert [int(v["bytes_up"]) for v in values] == [e["bytes_up"] for e in doc["history"]]
