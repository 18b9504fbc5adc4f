"""The README's first comparison is a command a reader can rerun: it runs as written, and the figures
committed beside it (docs/first/) were made by it."""

import json
import shlex
from pathlib import Path

import pytest

from fedlearn.analysis import sweep
from fedlearn.config import build_parser, resolve_defaults
from fedlearn.config.status import older_values

REPO = Path(__file__).resolve().parents[1]
MADE_HERE = {"save", "no_progress", "seed"}  # set by the sweep for each run
ADDED_SINCE = set(older_values())  # the flags whose value in runs saved before them is declared


def first_comparison_command() -> list[str]:
    """The arguments of the ``python3 -m fedlearn.sweep`` command under the README's 'A first comparison'."""
    section = (REPO / "README.md").read_text().split("## A first comparison", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    words = shlex.split(block.replace("\\\n", " "))
    assert words[:3] == ["python3", "-m", "fedlearn.sweep"]
    return words[3:]


def test_the_first_comparison_runs_as_written(tiny_data_dir, tmp_path, capsys):
    argv = first_comparison_command()
    argv[argv.index("--out") + 1] = str(tmp_path / "first")
    assert sweep.main([*argv, "--dataset", "mnist", "--data_dir", str(tiny_data_dir)]) == 0
    out = capsys.readouterr().out
    assert "Over seeds: mean ± standard deviation" in out and "Cost of federation against baseline" in out
    assert len(list((tmp_path / "first").glob("*.json"))) == 9 and (tmp_path / "first" / "curves.png").is_file()


@pytest.mark.parametrize("path", sorted((REPO / "docs" / "first").glob("*.json")), ids=lambda p: p.stem)
def test_the_committed_first_comparison_was_made_by_that_command(path):
    argv = first_comparison_command()
    common = argv[argv.index("--") + 1 :]
    seeds = argv[argv.index("--seeds") + 1].split(",")
    run = json.loads(path.read_text())
    accepted = sweep.flags_accepted(run["script"])
    mine = [token for flag, tokens in sweep.split_flags(common) if flag in accepted for token in tokens]
    flags = vars(build_parser(run["script"]).parse_args(mine))
    expected = resolve_defaults(flags, run["script"])
    saved = {k: v for k, v in run["args"].items() if k not in MADE_HERE}  # flags added since keep their defaults
    assert saved == {k: expected[k] for k in saved} and set(expected) - set(run["args"]) <= ADDED_SINCE
    assert str(run["seed"]) in seeds
