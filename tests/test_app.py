"""The library entry and the command line run the same code; the Hyperparameters table shows what a run uses."""

import json

import pytest

import fedlearn
from fedlearn.app import main
from fedlearn.errors import UsageError

TINY = {"dataset": "mnist", "global_epoch": 2, "local_epoch": 1, "num_clients": 4, "num_select_clients": 2,
        "init_lr": 1e-3, "no_progress": True}  # fmt: skip
WALL = {"wall_time_s", "time_breakdown_s", "versions"}


def argv(flags: dict) -> list[str]:
    out = []
    for name, value in flags.items():
        out += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    return out


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in WALL}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def table(out: str) -> dict[str, str]:
    """The Hyperparameters table's flag rows: setting -> value."""
    rows = out.split("Hyperparameters", 1)[1].split("Results", 1)[0].splitlines()[3:]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows if row.startswith("|")]
    return {setting: value for _, setting, value in cells if setting.startswith("--")}


@pytest.mark.parametrize("script", ["run_baseline", "run_federated", "run_async"])
def test_the_library_entry_equals_the_command_line(script, tiny_data_dir, tmp_path, capsys):
    flags = {"data_dir": str(tiny_data_dir), **TINY, "epoch": 2}
    assert main(script, [*argv(flags), "--save", str(tmp_path / "cli.json")]) == 0
    from_file = json.loads((tmp_path / "cli.json").read_text())
    returned = fedlearn.run(script, **flags)
    assert strip(returned) == strip({**from_file, "args": {**from_file["args"], "save": None}})
    assert strip(fedlearn.run(script, **flags)) == strip(returned)  # a second run in the process: nothing leaks


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"nosuch": 1}, "run_federated has no flag --nosuch"),
        ({"global_epoch": "3"}, "--global_epoch: expected an integer"),
        ({"global_epoch": 2.0}, "--global_epoch: expected an integer"),
        ({"init_lr": "fast"}, "--init_lr: expected a number"),
        ({"no_progress": 1}, "--no_progress: expected True or False"),
        ({"partition": "rings"}, "--partition: invalid choice 'rings'"),
        ({"global_epoch": 0}, "--global_epoch must be a positive integer"),
        ({"num_select_clients": 9}, "--num_select_clients (9) cannot exceed --num_clients (8)"),
    ],
)
def test_the_library_entry_refuses_what_the_command_line_refuses(tiny_data_dir, flags, message):
    with pytest.raises(UsageError) as caught:
        fedlearn.run("run_federated", data_dir=str(tiny_data_dir), **flags)
    assert message in str(caught.value)


def test_an_unknown_script_is_refused():
    with pytest.raises(UsageError, match="unknown script 'run_fast'"):
        fedlearn.run("run_fast")


def test_the_table_shows_the_parts_in_use_and_what_was_set(tiny_data_dir, capsys):
    base = ["--data_dir", str(tiny_data_dir), *argv(TINY)]
    assert main("run_federated", base) == 0
    plain = table(capsys.readouterr().out)
    assert {"--dataset", "--batch_size", "--init_lr", "--model", "--optimizer", "--seed", "--global_epoch",
            "--local_epoch", "--num_clients", "--num_select_clients", "--partition"} <= set(plain)  # fmt: skip
    assert not {"--epoch", "--compress", "--dp_clip", "--gar", "--byzantine", "--attack", "--delay"} & set(plain)
    assert len(plain) < 25
    assert (
        main(
            "run_federated",
            [*base, "--compress", "topk", "--gar", "median", "--byzantine", "1", "--num_select_clients", "3"],
        )
        == 0
    )
    robust = table(capsys.readouterr().out)
    assert robust["--compress"] == "topk" and robust["--compress_ratio"] == "0.01" and "--qsgd_levels" not in robust
    assert robust["--gar"] == "median" and robust["--gar_f"] == "1" and robust["--byzantine"] == "1"


def test_the_baseline_table_leaves_the_federated_flags_out_unless_its_clients_hold_out(tiny_data_dir, capsys):
    base = ["--data_dir", str(tiny_data_dir), "--dataset", "mnist", "--epoch", "1", "--no_progress"]
    assert main("run_baseline", base) == 0
    plain = table(capsys.readouterr().out)
    assert "--epoch" in plain and not {"--global_epoch", "--num_clients", "--partition"} & set(plain)
    assert main("run_baseline", [*base, "--client_test_frac", "0.2", "--partition", "dirichlet"]) == 0
    held = table(capsys.readouterr().out)
    assert {"--num_clients", "--partition", "--dirichlet_alpha", "--client_test_frac"} <= set(held)
    assert not {"--global_epoch", "--num_select_clients"} & set(held)
