"""Seed groups, their figures over the seeds, the cost-of-federation table; sweep --seeds."""

import json
import math

import pytest

from fedlearn.analysis import compare, sweep
from fedlearn.analysis.groups import cost_table, group_runs, group_table


def doc(script="run_federated", seed=0, accuracy=0.8, lr=1e-3, reached=None, worst=None, skew=0.1):
    """A minimal results document."""
    final = {"test_accuracy": accuracy, "test_loss": 0.5, "wall_time_s": 10.0, "best_test_accuracy": accuracy,
             "sim_time": 5.0, "client_updates": 10, "samples_trained": 1000, "target_accuracy": 0.7,
             "time_to_target": reached}  # fmt: skip
    if worst is not None:
        final["client_accuracy"] = {"mean": accuracy, "std": 0.01, "worst_10pct": worst, "best_10pct": accuracy}
    return {"script": script, "args": {"seed": seed, "init_lr": lr, "save": f"/tmp/{seed}.json"},
            "dataset": "mnist", "final": final, "history": [{"step": 1, "test_accuracy": accuracy}],
            "partition": None if script == "run_baseline" else {"label_skew_mean": skew}}  # fmt: skip


def reached(samples, sim=1.0):
    return {"step": 1, "wall_time_s": 2.0, "sim_time": sim, "samples_trained": samples, "client_updates": 4}


def test_runs_differing_only_in_the_seed_are_grouped_and_nothing_else_is():
    docs = [doc(seed=0), doc(seed=1), doc(seed=0, lr=1e-2), doc(script="run_async", seed=0), doc(seed=0)]
    groups = group_runs(["a_seed-0", "a_seed-1", "b", "c", "dup"], docs)
    assert [g.names for g in groups] == [("a_seed-0", "a_seed-1"), ("b",), ("c",), ("dup",)]
    assert groups[0].name == "a" and groups[0].seeds == [0, 1]


def test_a_run_saved_before_a_flag_existed_groups_with_runs_that_set_it_to_what_it_did():
    older, newer, augmented = doc(seed=0), doc(seed=1), doc(seed=2)
    newer["args"]["augment"], augmented["args"]["augment"] = "none", "crop-flip"
    groups = group_runs(["a_seed-0", "a_seed-1", "b"], [older, newer, augmented])
    assert [g.names for g in groups] == [("a_seed-0", "a_seed-1"), ("b",)]


def test_the_group_table_shows_mean_std_interval_and_missing_seeds():
    docs = [doc(seed=s, accuracy=a) for s, a in ((0, 0.80), (1, 0.82), (2, 0.84))]
    docs += [doc(seed=s, lr=1e-2, accuracy=0.5) for s in (0, 2)]
    table = group_table(group_runs(["f0", "f1", "f2", "g0", "g2"], docs), compare.run_label)
    half = 4.302653 * 2.0 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 2 points
    assert f"82.00 ± 2.00 [{82 - half:.2f}, {82 + half:.2f}]" in table
    assert "0, 2 (missing: 1)" in table and "| 50.00 " in table  # two equal values: std 0 and a zero-width interval


def test_never_is_counted_in_the_time_to_target():
    docs = [doc(seed=0, reached=reached(100, sim=4.0)), doc(seed=1, reached=None), doc(seed=2, reached=reached(100))]
    table = group_table(group_runs(["r0", "r1", "r2"], docs), compare.run_label)
    row = next(line for line in table.splitlines() if line.startswith("| time to target: simulated"))
    assert "2.5 ± 2.1" in row and "never 1/3" in row


def test_the_cost_of_federation_pairs_seeds_and_compares_to_the_baseline():
    base = [doc("run_baseline", s, a, reached=reached(1000), worst=w) for s, a, w in ((0, .85, .70), (1, .86, .72),
                                                                                     (2, .87, .74))]  # fmt: skip
    runs = ((0, 0.80, reached(3000), 0.60), (1, 0.82, None, 0.60), (2, 0.84, reached(5000), 0.62))
    fed = [doc(seed=s, accuracy=a, reached=r, worst=w, skew=0.3) for s, a, r, w in runs]
    groups = group_runs([f"b{i}" for i in range(3)] + [f"f{i}" for i in range(3)], base + fed)
    table = cost_table(groups, groups[0], compare.run_label)
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table.splitlines()[1:-1]}
    half = 4.302653 * 1.0 / math.sqrt(3)  # gaps -5, -4, -3 points: mean -4, s = 1
    assert rows["accuracy gap (points)"] == f"-4.00 ± 1.00 [{-4 - half:.2f}, {-4 + half:.2f}]"
    assert rows["worst-10 % client accuracy gap (points)"].startswith("-11.33 ± 1.15")  # -10, -12, -12: s^2 = 8/3 / 2
    assert rows["samples to target (× baseline)"].startswith("4.00 ± 1.41") and "never 1/3" in rows[
        "samples to target (× baseline)"
    ]  # fmt: skip
    assert rows["label skew (mean TV distance)"] == "0.300 ± 0.000 [0.300, 0.300]"


def test_compare_adds_the_cost_table_when_a_baseline_is_among_the_inputs(tmp_path, capsys):
    paths = []
    for name, d in (("base", doc("run_baseline", 0, 0.9)), ("fed", doc(seed=0, accuracy=0.8))):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(d))
    assert compare.main([str(p) for p in paths]) == 0
    out = capsys.readouterr().out
    assert "Cost of federation against base" in out and "-10.00" in out
    assert compare.main([str(paths[1]), "--baseline", str(paths[1])]) == 2  # not a baseline run


@pytest.mark.parametrize("seeds", ["0,x", "", "1,1", "-1", "0,,2"])
def test_malformed_seeds_are_a_usage_error(seeds, tmp_path, capsys):
    assert sweep.main(["--out", str(tmp_path / "o"), "--seeds", seeds]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--seeds" in err[0]


def test_seeds_repeat_every_grid_point_and_cannot_be_mixed_with_seed():
    runs = sweep.plan_runs(["run_federated"], [("partition", ["iid", "dirichlet"])], [], [0, 3])
    assert [name for _, name, _ in runs] == ["federated_partition-iid_seed-0", "federated_partition-iid_seed-3",
                                             "federated_partition-dirichlet_seed-0",
                                             "federated_partition-dirichlet_seed-3"]  # fmt: skip
    assert runs[1][2] == ["--partition", "iid", "--seed", "3"]
    with pytest.raises(Exception, match="--seeds and --seed"):
        sweep.plan_runs(["run_federated"], [], ["--seed", "1"], [0, 1])


def test_a_baseline_follows_the_partition_only_when_clients_hold_out_test_sets():
    axes = [("partition", ["iid", "dirichlet"])]
    assert len(sweep.plan_runs(["run_baseline"], axes, [])) == 1
    assert len(sweep.plan_runs(["run_baseline"], axes, ["--client_test_frac", "0.2"])) == 2


def test_the_cost_table_has_no_target_rows_when_no_run_had_a_target():
    docs = [doc("run_baseline", s, 0.9) for s in (0, 1)] + [doc(seed=s) for s in (0, 1)]
    for d in docs:
        d["final"]["target_accuracy"] = None
    groups = group_runs(["b0", "b1", "f0", "f1"], docs)
    table = cost_table(groups, groups[0], compare.run_label)
    assert "to target" not in table and "-10.00" in table
