"""Bad input to ``fedlearn.compare`` and ``fedlearn.sweep``: one line on stderr naming the file (and field),
exit status 2, no traceback, no garbage plot, and no file written at or next to the path asked for."""

import copy
import errno
import json
import math
import os
import sys
from pathlib import Path

import pytest

from fedlearn import app
from fedlearn.analysis import compare, sweep
from test_compare import TINY

DELETE = object()  # as a value in a case: remove the field


@pytest.fixture(scope="module")
def valid(tiny_data_dir, tmp_path_factory) -> dict:
    """A results document written by run_federated, with a target accuracy (so time_to_target is filled in)."""
    path = tmp_path_factory.mktemp("valid") / "federated.json"
    argv = ["--data_dir", str(tiny_data_dir), *TINY, "--target_acc", "0.01", "--save", str(path)]
    assert app.main("run_federated", argv) == 0
    doc = json.loads(path.read_text())
    assert isinstance(doc["final"]["time_to_target"], dict)
    return doc


def changed(doc: dict, where: str, value: object) -> dict:
    """A copy of ``doc`` with the field at dotted path ``where`` (list items by index) set to ``value``."""
    doc = copy.deepcopy(doc)
    *parents, last = where.split(".")
    holder = doc
    for key in parents:
        holder = holder[int(key)] if isinstance(holder, list) else holder[key]
    key = int(last) if isinstance(holder, list) else last
    if value is DELETE:
        del holder[key]
    else:
        holder[key] = value
    return doc


def files_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def one_line_error(capsys) -> str:
    """The single stderr line of a failed command (nothing else there, no traceback)."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip() and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Importing matplotlib fails: proves a check happened before anything was drawn."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)


SCHEMA_CASES = [
    ("script", "run_other", "script is the string 'run_other', expected one of run_baseline, run_federated"),
    ("script", 3, "script is 3, expected one of"),
    ("args", [], "args is an empty list, expected an object"),
    ("args.prox_mu", "0.1", "args.prox_mu is the string '0.1', expected a number or null"),
    ("args.num_clients", "4", "args.num_clients is the string '4', expected an integer"),
    ("args.num_select_clients", 2.5, "args.num_select_clients is 2.5, expected an integer from 0 to 1e+15 or null"),
    ("args.seed", True, "args.seed is true, expected an integer"),
    ("args.model", {}, "args.model is an object, expected a string or null"),
    ("dataset", ["mnist"], "dataset is a list, expected a string"),
    ("run", [], "run is an empty list, expected an object"),
    ("run", None, "run is null, expected an object"),
    ("run.partition", 5, "run.partition is 5, expected a string or null"),
    ("run.test set fingerprint", ["ab"], "run['test set fingerprint'] is a list, expected a string or null"),
    ("final", None, "final is null, expected an object"),
    ("final.test_accuracy", DELETE, "final.test_accuracy is missing"),
    ("final.test_accuracy", True, "final.test_accuracy is true, expected a number from 0 to 1"),
    ("final.test_accuracy", math.nan, "final.test_accuracy is NaN, expected a number"),
    ("final.test_accuracy", math.inf, "final.test_accuracy is Infinity, expected a number"),
    ("final.test_accuracy", 2.5, "final.test_accuracy is 2.5, expected a number from 0 to 1"),
    ("final.test_loss", "x", "final.test_loss is the string 'x', expected a number or null"),
    ("final.wall_time_s", -1, "final.wall_time_s is -1, expected a number from 0 to 1e+300"),
    ("final.best_test_accuracy", "x", "final.best_test_accuracy is the string 'x', expected a number"),
    ("final.sim_time", 1e308, "final.sim_time is 1e+308, expected a number from 0 to 1e+300 or null"),
    ("final.client_updates", {}, "final.client_updates is an object, expected an integer"),
    ("final.samples_trained", [1], "final.samples_trained is a list, expected an integer"),
    ("final.target_accuracy", "0.9", "final.target_accuracy is the string '0.9', expected a number"),
    ("final.time_to_target", [], "final.time_to_target is an empty list, expected an object or null"),
    ("final.time_to_target.step", DELETE, "final.time_to_target.step is missing"),
    ("final.time_to_target.wall_time_s", "1", "final.time_to_target.wall_time_s is the string '1', expected a number"),
    ("history", [], "history is an empty list, expected a non-empty list"),
    ("history", {}, "history is an object, expected a non-empty list"),
    ("history.1", 5, "history[1] is 5, expected an object"),
    ("history.1.step", 1.5, "history[1].step is 1.5, expected an integer"),
    ("history.1.step", True, "history[1].step is true, expected an integer"),
    ("history.1.step", 10**20, "history[1].step is 100000000000000000000, expected an integer from 0 to 1e+15"),
    ("history.1.test_accuracy", "0.5", "history[1].test_accuracy is the string '0.5', expected a number from 0 to 1"),
    ("history.1.sim_time", 1.7e308, "history[1].sim_time is 1.7e+308, expected a number"),  # broke matplotlib's axis
    ("history.1.client_updates", [], "history[1].client_updates is an empty list, expected an integer"),
]


@pytest.mark.parametrize(
    "where, value, message",
    SCHEMA_CASES,
    ids=[f"{w}={'(deleted)' if v is DELETE else repr(v)}" for w, v, _ in SCHEMA_CASES],
)
def test_a_wrongly_typed_field_is_one_line_naming_file_and_field(valid, where, value, message, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(changed(valid, where, value)))
    assert compare.main([str(bad), "--plot", str(tmp_path / "curves.png")]) == 2
    line = one_line_error(capsys)
    assert f"{bad}: not a fedlearn results file ({message}" in line
    assert files_under(tmp_path) == [bad]  # no plot drawn


def test_the_unchanged_document_and_a_diverged_run_are_accepted(valid, tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(valid))
    diverged = tmp_path / "diverged.json"  # a NaN loss is saved as null
    diverged.write_text(json.dumps(changed(changed(valid, "final.test_loss", None), "run", DELETE)))
    assert compare.main([str(good), str(diverged)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| test loss"))
    assert row.rstrip(" |").endswith("-")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 100_000 + "]" * 100_000, "not valid JSON (nested too deeply)"),
        ('{"script": "run_federated", "args": ' + "[" * 100_000, "not valid JSON (nested too deeply)"),
        ('{"final": ' + "1" * 5000 + "}", "not valid JSON"),
    ],
    ids=["deep-list", "deep-field", "5000-digit-integer"],
)
def test_unparsable_json_is_one_line(text, message, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert compare.main([str(bad)]) == 2
    assert f"{bad}: {message}" in one_line_error(capsys)


@pytest.mark.parametrize(
    "plot, message",
    [
        ("plots", "the file name must end in .png"),  # an existing folder: matplotlib wrote plots.png beside it
        ("curves", "the file name must end in .png"),  # matplotlib appended .png
        ("curves.xyz", "the file name must end in .png"),
        ("", "--plot '': the file name must end in .png"),
        ("taken.png", "is a folder"),
        ("missing/curves.png", "does not exist"),
        ("a.json/curves.png", "is not a folder"),
    ],
)
def test_a_bad_plot_path_is_one_line_before_drawing(valid, plot, message, tmp_path, capsys, no_matplotlib, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a.json").write_text(json.dumps(valid))
    Path("plots").mkdir()
    Path("taken.png").mkdir()
    before = files_under(tmp_path)
    assert compare.main(["a.json", "--plot", plot]) == 2
    line = one_line_error(capsys)
    assert line.startswith("python3 -m fedlearn.compare: error: --plot") and message in line
    assert files_under(tmp_path) == before


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_plot_into_an_unwritable_folder_is_one_line(valid, tmp_path, capsys, no_matplotlib):
    (tmp_path / "a.json").write_text(json.dumps(valid))
    assert compare.main([str(tmp_path / "a.json"), "--plot", "/proc/fedlearn-test.png"]) == 2  # even as root
    assert "--plot /proc/fedlearn-test.png: folder /proc is not writable" in one_line_error(capsys)
    assert not Path("/proc/fedlearn-test.png").exists()


def test_a_failed_plot_write_is_one_line_and_leaves_no_file(valid, tmp_path, capsys, monkeypatch):
    (tmp_path / "a.json").write_text(json.dumps(valid))
    before = files_under(tmp_path)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    assert compare.main([str(tmp_path / "a.json"), "--plot", str(tmp_path / "curves.png")]) == 1
    assert f"--plot {tmp_path / 'curves.png'}: cannot write (No space left on device)" in one_line_error(capsys)
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("argv", [[], ["a.json", "--plot"], ["a.json", "--bogus"]])
def test_compare_usage_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        compare.main(argv)
    assert stop.value.code == 2
    assert one_line_error(capsys).startswith("python3 -m fedlearn.compare: error: ")


@pytest.mark.parametrize(
    "out, message",
    [
        ("file.txt", "--out file.txt: exists and is not a folder"),
        ("file.txt/runs", "--out file.txt/runs: cannot create this folder (Not a directory)"),
        ("", "--out '': empty path"),
        pytest.param(
            "/proc/fedlearn-test/runs",
            "--out /proc/fedlearn-test/runs: cannot create this folder (",
            marks=pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc"),
        ),
    ],
)
def test_a_bad_sweep_out_is_one_line_before_any_run(out, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("file.txt").write_text("keep")
    runs = []
    monkeypatch.setattr(sweep.app, "main", lambda script, argv: runs.append(script) or 0)
    before = files_under(tmp_path)
    assert sweep.main(["--out", out, "--scripts", "run_federated", "--", "--global_epoch", "1"]) == 2
    assert one_line_error(capsys).startswith(f"python3 -m fedlearn.sweep: error: {message}")
    assert runs == [] and files_under(tmp_path) == before and Path("file.txt").read_text() == "keep"


@pytest.mark.parametrize("argv", [["--scripts", "run_federated"], ["--out", "x", "--scripts", "nope"], ["--bogus"]])
def test_sweep_usage_errors_are_one_line(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        sweep.main(argv)
    assert stop.value.code == 2
    assert one_line_error(capsys).startswith("python3 -m fedlearn.sweep: error: ")
    assert files_under(tmp_path) == []
