import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from fedlearn import app
from fedlearn.analysis import compare, sweep
from fedlearn.errors import UsageError

TINY = [
    "--batch_size",
    "40",
    "--init_lr",
    "1e-3",
    "--epoch",
    "1",
    "--global_epoch",
    "2",
    "--local_epoch",
    "1",
    "--num_clients",
    "4",
    "--num_select_clients",
    "2",
    "--no_progress",
    "--dataset",
    "mnist",
]


@pytest.fixture(scope="module")
def saved_runs(tiny_data_dir, tmp_path_factory):
    """Results files written by the real scripts (in-process) on the tiny data."""
    out = tmp_path_factory.mktemp("runs")
    paths = {}
    for script, extra in [
        ("run_baseline", []),
        ("run_federated", ["--partition", "dirichlet"]),
        ("run_async", ["--algorithm", "fedbuff", "--buffer_size", "2"]),
    ]:
        paths[script] = out / f"{script}.json"
        assert app.main(script, ["--data_dir", str(tiny_data_dir), *TINY, *extra, "--save", str(paths[script])]) == 0
    return paths


def test_compare_lays_runs_side_by_side(saved_runs, capsys):
    assert compare.main([str(p) for p in saved_runs.values()]) == 0
    out, err = capsys.readouterr()
    header = out.splitlines()[0]
    assert all(name in header for name in ("run_baseline", "run_federated", "run_async"))
    for method in ("baseline", "FedAvg", "FedBuff"):
        assert method in out
    assert "dirichlet (alpha 0.5)" in out
    for path in saved_runs.values():
        accuracy = json.loads(path.read_text())["final"]["test_accuracy"]
        assert f"{100 * accuracy:.2f}" in out
    assert "warning" not in err


def test_compare_warns_when_datasets_or_test_sets_differ(saved_runs, tmp_path, capsys):
    doc = json.loads(saved_runs["run_federated"].read_text())
    doc["dataset"] = "fashion-mnist"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    compare.main([str(saved_runs["run_baseline"]), str(other)])
    assert "warning: runs differ in dataset" in capsys.readouterr().err
    doc["dataset"] = "mnist"
    doc["run"]["test set fingerprint"] = "0123456789abcdef"
    other.write_text(json.dumps(doc))
    compare.main([str(saved_runs["run_baseline"]), str(other)])
    assert "different test sets" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "the top level is a list, expected an object"),
        ('{"script": "run_federated", "args": {}, "dataset": "mnist", "history": []}', "final is missing"),
        (
            (
                '{"script": "run_federated", "args": {}, "dataset": "mnist", "final": {"test_accuracy": 1, '
                '"test_loss": 0, "wall_time_s": 1}, "history": [{"step": 1}]}'
            ),
            "history[0].test_accuracy is missing",
        ),
    ],
)
def test_compare_rejects_a_malformed_file_with_one_line(content, reason, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert compare.main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and reason in err[0]


def test_compare_reports_a_missing_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        compare.load_result(tmp_path / "absent.json")


def test_plot_is_a_valid_png(saved_runs, tmp_path):
    png = tmp_path / "curves.png"
    assert compare.main([*map(str, saved_runs.values()), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # exactly the path asked for, no temporary file


@pytest.mark.slow
def test_matplotlib_is_imported_only_for_plots():
    code = "import sys, fedlearn.compare, fedlearn.sweep, fedlearn.app; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_sweep_plans_each_script_only_the_axes_it_uses():
    runs = sweep.plan_runs(
        ["run_baseline", "run_federated", "run_async"],
        [("partition", ["iid", "dirichlet"]), ("algorithm", ["fedasync", "fedbuff"])],
        ["--global_epoch", "2", "--buffer_size", "2"],
    )
    names = [name for _, name, _ in runs]
    assert names == [
        "baseline",
        "federated_partition-iid",
        "federated_partition-dirichlet",
        "async_partition-iid_algorithm-fedasync",
        "async_partition-iid_algorithm-fedbuff",
        "async_partition-dirichlet_algorithm-fedasync",
        "async_partition-dirichlet_algorithm-fedbuff",
    ]
    argv = {name: a for _, name, a in runs}
    assert "--buffer_size" not in argv["federated_partition-iid"]  # async-only flags go to run_async alone
    assert argv["async_partition-iid_algorithm-fedbuff"][-4:] == ["--partition", "iid", "--algorithm", "fedbuff"]
    with pytest.raises(UsageError, match="--bogus"):
        sweep.plan_runs(["run_federated"], [("bogus", ["1"])], [])


def test_sweep_runs_the_grid_and_ends_with_the_compare_table(tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = sweep.main(
        [
            "--out",
            str(out),
            "--scripts",
            "run_baseline",
            "run_federated",
            "--vary",
            "partition=iid,shards",
            "--",
            "--data_dir",
            str(tiny_data_dir),
            *TINY,
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "baseline.json",
        "federated_partition-iid.json",
        "federated_partition-shards.json",
    ]
    last_lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("| run ") and "federated_partition-shards" in line for line in last_lines)


def test_results_file_is_written_whole_with_ordinary_permissions(tmp_path):
    from fedlearn.events.results_file import write_results

    old = os.umask(0o022)
    try:
        write_results(tmp_path / "r.json", {"value": float("nan"), "ok": [1, 2]})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    assert json.loads((tmp_path / "r.json").read_text()) == {"value": None, "ok": [1, 2]}  # NaN -> null
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind
