import math

import numpy as np
import pytest
import torch

from fedlearn.server.geomedian import geometric_median, weiszfeld
from fedlearn.server.rules import (
    RULES,
    SELECTION_RULES,
    Aggregate,
    RuleConfig,
    aggregate,
    bulyan,
    check_condition,
    coordinate_median,
    krum,
    krum_scores,
    min_inputs,
    multi_krum,
    trimmed_mean,
    weighted_average,
)

ROBUST = tuple(r for r in RULES if r != "mean")


def clustered_with_outliers(honest: int, f: int, dim: int = 6, offset: float = 1e3, seed: int = 0):
    """``honest`` rows around a known mean, then ``f`` rows ``offset`` away; returns (stack, honest mean)."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.linspace(-1.0, 2.0, dim)
    good = centre + 0.05 * torch.randn(honest, dim, generator=gen)
    bad = centre + offset + torch.randn(f, dim, generator=gen)
    return torch.cat([good, bad]), good.mean(dim=0)


def test_constants():
    assert RULES == ("mean", "median", "trimmed-mean", "krum", "multi-krum", "bulyan", "geomedian")
    assert SELECTION_RULES == ("krum", "multi-krum", "bulyan")
    assert RuleConfig() == RuleConfig("mean", 0, None, None, 100, 1e-6)


def test_coordinate_median_odd_and_even():
    stack = torch.tensor([[1.0, 5.0], [3.0, -1.0], [2.0, 100.0]])
    assert torch.equal(coordinate_median(stack), torch.tensor([2.0, 5.0]))
    even = torch.tensor([[1.0], [2.0], [3.0], [10.0]])
    assert coordinate_median(even).item() == pytest.approx(2.5)


def test_trimmed_mean_drops_extremes_per_coordinate():
    stack = torch.tensor([[1.0], [2.0], [3.0], [4.0], [100.0]])
    assert trimmed_mean(stack, 1).item() == pytest.approx(3.0)
    assert trimmed_mean(stack, 0).item() == pytest.approx(22.0)
    assert trimmed_mean(stack, 2).item() == pytest.approx(3.0)
    # each coordinate sorted on its own: column 0 keeps {1, 2}, column 1 keeps {1, 2}
    cross = torch.tensor([[0.0, 100.0], [1.0, 1.0], [2.0, 2.0], [100.0, 0.0]])
    assert torch.allclose(trimmed_mean(cross, 1), torch.tensor([1.5, 1.5]))
    with pytest.raises(ValueError, match=r"trimmed-mean needs n > 2 \* trim \(n=4, trim=2\)"):
        trimmed_mean(cross, 2)


def test_krum_scores_by_hand():
    stack = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    # f = 1, n = 5: each row sums its n - f - 2 = 2 nearest squared distances
    expected = torch.tensor([1 + 4, 1 + 1, 1 + 1, 1 + 4, 49 + 64], dtype=torch.float64)
    assert torch.allclose(krum_scores(stack, 1), expected)
    assert krum(stack, 1) == 1  # rows 1 and 2 tie: lowest index


def test_krum_picks_the_row_nearest_the_cluster():
    stack = torch.tensor([[0.0, 0.0], [0.1, 0.1], [0.05, 0.05], [0.1, 0.0], [10.0, 10.0]])
    assert krum(stack, 1) == 2


def test_krum_tie_break_is_lowest_index():
    stack = torch.tensor([[9.0], [1.0], [1.0], [1.0], [1.0]])
    assert krum(stack, 1) == 1


def test_krum_distances_survive_a_large_common_offset():
    # differences of 1e-3 on top of 1e8: a naive Gram matrix loses them even in float64
    small = torch.tensor([[0.0, 0.0], [2e-3, 2e-3], [1e-3, 1e-3], [2e-3, 0.0], [5e-2, 5e-2]], dtype=torch.float64)
    assert krum(small + 1e8, 1) == krum(small, 1) == 2


def test_multi_krum_picks_the_clustered_rows():
    stack, _ = clustered_with_outliers(honest=5, f=2, offset=50.0)
    assert sorted(multi_krum(stack, 2, 5)) == [0, 1, 2, 3, 4]
    assert sorted(multi_krum(stack, 2)) == [0, 1, 2, 3, 4]  # default m = n - f
    picks = multi_krum(stack, 2, 3)
    assert len(picks) == 3 and set(picks) <= {0, 1, 2, 3, 4}
    scores = krum_scores(stack, 2)
    assert [float(scores[i]) for i in picks] == sorted(float(scores[i]) for i in picks)  # best first


def test_bulyan_by_hand():
    stack = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [100.0]])
    vector, chosen = bulyan(stack, 1)
    # theta = 5 picks by Krum on the shrinking set; beta = 3 values closest to the median 2 -> {1, 2, 3}
    assert chosen == [2, 3, 1, 4, 0]
    assert vector.item() == pytest.approx(2.0)


def test_bulyan_with_f_zero_is_the_mean():
    stack = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    vector, chosen = bulyan(stack, 0)
    assert sorted(chosen) == list(range(5))
    assert torch.allclose(vector, stack.mean(dim=0), atol=1e-6)


def test_bulyan_stays_near_the_cluster_and_selects_no_outlier():
    stack, honest_mean = clustered_with_outliers(honest=9, f=2, offset=20.0)
    vector, chosen = bulyan(stack, 2)
    assert len(chosen) == 11 - 4 and len(set(chosen)) == len(chosen)
    assert not set(chosen) & {9, 10}
    assert torch.allclose(vector, honest_mean, atol=0.1)


def test_geometric_median_of_symmetric_points_is_their_centre():
    centre = torch.tensor([3.0, -2.0])
    offsets = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [5.0, 0.0], [-5.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    assert torch.allclose(geometric_median(centre + offsets, torch.ones(6)), centre, atol=1e-5)


def test_geometric_median_known_answers():
    collinear = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])  # the middle point, not the mean (11/3)
    assert torch.allclose(geometric_median(collinear, torch.ones(3)), torch.tensor([1.0, 0.0]), atol=1e-4)
    # Fermat point of the right isosceles triangle: x = y = (3 - sqrt 3) / 6
    triangle = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    fermat = (3 - math.sqrt(3)) / 6
    expected = torch.tensor([fermat, fermat], dtype=torch.float64)
    assert torch.allclose(geometric_median(triangle, torch.ones(3)), expected)
    # weighted: 3 |z - a| + |z - b| is smallest at a
    pair = torch.tensor([[0.0, 0.0], [4.0, 0.0]])
    assert torch.allclose(geometric_median(pair, torch.tensor([3.0, 1.0])), torch.zeros(2), atol=1e-4)


def test_geometric_median_respects_iteration_budget():
    triangle = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # the median: no data point
    one = weiszfeld(triangle, torch.ones(3), iters=1)
    assert one.iterations == 1 and not one.converged
    full = weiszfeld(triangle, torch.ones(3), iters=1000)
    assert full.converged and 1 < full.iterations < 1000
    collinear = torch.tensor([[0.0], [1.0], [10.0]])
    assert weiszfeld(collinear, torch.ones(3), iters=1) == weiszfeld(collinear, torch.ones(3))  # on a point: exact
    with pytest.raises(ValueError):
        geometric_median(collinear, torch.ones(3), iters=0)
    with pytest.raises(ValueError):
        geometric_median(collinear, torch.zeros(3))


def objective(point, stack, weights):
    return float((weights * torch.linalg.vector_norm(stack - point, dim=1)).sum())


def reference_median(stack, weights):
    """A high-precision reference for 3 points in many dimensions: the median lies in their plane, where the
    objective is smooth away from the points; scipy's BFGS minimizes it there to a gradient of 1e-13."""
    from scipy.optimize import minimize

    x, w = stack.double().numpy(), weights.double().numpy()
    basis, _ = np.linalg.qr((x[1:] - x[0]).T)  # an orthonormal basis of the points' plane
    plane = (x - x[0]) @ basis

    def f(p):
        return float((w * np.linalg.norm(plane - p, axis=1)).sum())

    def grad(p):
        d = p - plane
        return (w[:, None] * d / np.linalg.norm(d, axis=1)[:, None]).sum(axis=0)

    found = minimize(f, plane.mean(axis=0), jac=grad, method="BFGS", options={"gtol": 1e-13, "maxiter": 10000})
    return torch.from_numpy(x[0] + basis @ found.x)


@pytest.mark.parametrize("seed", range(5))
def test_a_median_on_a_data_point_is_that_point_exactly(seed):
    # 1-D with unequal weights: the weighted median is a data point (Weiszfeld alone crawls toward it)
    g = torch.Generator().manual_seed(seed)
    stack = torch.randn(7, 1, generator=g, dtype=torch.float64)
    weights = torch.rand(7, generator=g, dtype=torch.float64) + 0.1
    order = torch.argsort(stack[:, 0])
    cumulative = torch.cumsum(weights[order], 0)
    expected = stack[order[int(torch.searchsorted(cumulative, cumulative[-1] / 2))]]
    found = weiszfeld(stack, weights)
    assert found.converged and found.iterations == 0 and torch.equal(found.point, expected)


@pytest.mark.parametrize("seed", range(5))
def test_few_points_in_many_dimensions_reach_the_median(seed):
    g = torch.Generator().manual_seed(seed)
    stack = torch.randn(3, 40, generator=g, dtype=torch.float64)
    weights = torch.ones(3, dtype=torch.float64)
    found = weiszfeld(stack, weights, iters=100)
    assert found.converged and found.iterations > 0  # (Gaussian triangles here have no angle of 120 degrees)
    reference = reference_median(stack, weights)
    scale = float(torch.linalg.vector_norm(stack - stack.mean(0), dim=1).max())
    assert float(torch.linalg.vector_norm(found.point - reference)) <= 1e-6 * scale
    assert objective(found.point, stack, weights) <= objective(reference, stack, weights) + 1e-12


def test_the_json_reports_every_aggregation_s_iterations(tiny_data_dir, tmp_path, capsys):
    import json

    from fedlearn.app import main

    path = tmp_path / "gm.json"
    argv = ["--data_dir", str(tiny_data_dir), "--dataset", "mnist", "--global_epoch", "3", "--local_epoch", "1",
            "--num_clients", "4", "--num_select_clients", "3", "--init_lr", "1e-3", "--no_progress", "--gar",
            "geomedian", "--save", str(path)]  # fmt: skip
    assert main("run_federated", argv) == 0
    final = json.loads(path.read_text())["final"]
    assert len(final["geomedian_iterations"]) == 3 and final["geomedian_unconverged"] == 0
    assert "Weiszfeld iterations" in capsys.readouterr().out


@pytest.mark.parametrize("rule", ROBUST)
def test_robust_rules_ignore_far_outliers(rule):
    f = 2
    stack, honest_mean = clustered_with_outliers(honest=12, f=f)
    weights = torch.ones(stack.shape[0])
    out = aggregate(stack, weights, RuleConfig(rule, f=f))
    assert out.vector.dtype == stack.dtype and out.vector.shape == honest_mean.shape
    assert torch.allclose(out.vector, honest_mean, atol=0.1), (rule, out.vector - honest_mean)
    plain = aggregate(stack, weights, RuleConfig("mean", f=f)).vector
    assert (plain - honest_mean).abs().min() > 100


@pytest.mark.parametrize("rule", RULES)
def test_aggregate_reports_selected_only_for_selection_rules(rule):
    stack, _ = clustered_with_outliers(honest=9, f=2)
    out = aggregate(stack, torch.ones(11), RuleConfig(rule, f=2))
    assert isinstance(out, Aggregate)
    if rule in SELECTION_RULES:
        assert isinstance(out.selected, tuple) and out.selected == tuple(sorted(out.selected))
        assert all(isinstance(i, int) for i in out.selected) and not set(out.selected) & {9, 10}
    else:
        assert out.selected is None


def test_aggregate_krum_and_multi_krum_vectors():
    stack, _ = clustered_with_outliers(honest=7, f=2)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 1e6, 1e6])
    k = aggregate(stack, weights, RuleConfig("krum", f=2))
    assert k.selected == (krum(stack, 2),) and torch.equal(k.vector, stack[k.selected[0]])
    mk = aggregate(stack, weights, RuleConfig("multi-krum", f=2, multikrum_m=4))
    idx = torch.tensor(mk.selected)
    assert len(mk.selected) == 4
    assert torch.allclose(mk.vector, weighted_average(stack[idx], weights[idx]))
    assert not torch.allclose(mk.vector, stack[idx].mean(dim=0))  # the weights matter


def test_aggregate_mean_is_weighted_and_median_ignores_weights():
    stack = torch.tensor([[0.0], [1.0], [2.0]])
    counts = torch.tensor([3.0, 1.0, 0.0])
    assert aggregate(stack, counts, RuleConfig("mean")).vector.item() == pytest.approx(0.25)
    assert aggregate(stack, counts, RuleConfig("median")).vector.item() == pytest.approx(1.0)
    assert aggregate(stack, counts, RuleConfig("geomedian")).vector.item() == pytest.approx(0.0, abs=1e-4)
    assert aggregate(stack, counts, RuleConfig("trimmed-mean", trim=1)).vector.item() == pytest.approx(1.0)


def test_aggregate_keeps_float64():
    stack, _ = clustered_with_outliers(honest=9, f=2)
    stack = stack.double()
    for rule in RULES:
        assert aggregate(stack, torch.ones(11), RuleConfig(rule, f=2)).vector.dtype == torch.float64


def test_aggregate_rejects_bad_inputs():
    stack = torch.zeros(3, 2)
    with pytest.raises(ValueError):
        aggregate(stack, torch.ones(2), RuleConfig())
    with pytest.raises(ValueError):
        aggregate(stack, -torch.ones(3), RuleConfig())
    with pytest.raises(ValueError):
        aggregate(torch.zeros(6), torch.ones(6), RuleConfig())
    bad = stack.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        aggregate(bad, torch.ones(3), RuleConfig("median"))
    with pytest.raises(ValueError, match=r"krum needs n >= 2f \+ 3 \(n=3, f=1\)"):
        aggregate(stack, torch.ones(3), RuleConfig("krum", f=1))


def test_check_condition_messages():
    f = 1
    with pytest.raises(ValueError, match=r"^krum needs n >= 2f \+ 3 \(n=4, f=1\)$"):
        check_condition(RuleConfig("krum", f=f), 2 * f + 2)
    check_condition(RuleConfig("krum", f=f), 2 * f + 3)
    with pytest.raises(ValueError, match=r"^bulyan needs n >= 4f \+ 3 \(n=10, f=2\)$"):
        check_condition(RuleConfig("bulyan", f=2), 4 * 2 + 2)
    check_condition(RuleConfig("bulyan", f=2), 4 * 2 + 3)
    with pytest.raises(ValueError, match=r"^trimmed-mean needs n > 2 \* trim \(n=4, trim=2\)$"):
        check_condition(RuleConfig("trimmed-mean", trim=2), 4)
    check_condition(RuleConfig("trimmed-mean", trim=2), 5)
    with pytest.raises(ValueError, match=r"^trimmed-mean needs n > 2 \* trim \(n=6, trim=3\)$"):
        check_condition(RuleConfig("trimmed-mean", f=3), 6)  # trim defaults to f
    with pytest.raises(ValueError, match=r"^multi-krum needs n >= 2f \+ 3 \(n=4, f=1\)$"):
        check_condition(RuleConfig("multi-krum", f=1), 4)
    with pytest.raises(ValueError, match=r"^multi-krum needs 1 <= m <= n - f \(n=5, f=1, m=5\)$"):
        check_condition(RuleConfig("multi-krum", f=1, multikrum_m=5), 5)
    with pytest.raises(ValueError, match=r"m=0"):
        check_condition(RuleConfig("multi-krum", f=1, multikrum_m=0), 5)
    check_condition(RuleConfig("multi-krum", f=1, multikrum_m=4), 5)
    with pytest.raises(ValueError, match=r"^median needs n > 2f \(n=4, f=2\)$"):
        check_condition(RuleConfig("median", f=2), 4)
    with pytest.raises(ValueError, match=r"^geomedian needs n > 2f \(n=2, f=1\)$"):
        check_condition(RuleConfig("geomedian", f=1), 2)
    with pytest.raises(ValueError, match="unknown rule"):
        check_condition(RuleConfig("average"), 5)
    with pytest.raises(ValueError, match="f must be >= 0"):
        check_condition(RuleConfig("mean", f=-1), 5)
    check_condition(RuleConfig("mean", f=3), 1)  # the plain mean has no condition beyond n >= 1
    with pytest.raises(ValueError):
        check_condition(RuleConfig("mean"), 0)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("f", [0, 1, 3])
def test_min_inputs_is_the_threshold_of_check_condition(rule, f):
    config = RuleConfig(rule, f=f)
    n = min_inputs(config)
    check_condition(config, n)
    with pytest.raises(ValueError):
        check_condition(config, n - 1)


def test_min_inputs_values():
    assert [min_inputs(RuleConfig(r, f=2)) for r in RULES] == [1, 5, 5, 7, 7, 11, 5]
    assert min_inputs(RuleConfig("median")) == 1
    assert min_inputs(RuleConfig("trimmed-mean", f=2, trim=1)) == 3
    assert min_inputs(RuleConfig("multi-krum", f=1, multikrum_m=6)) == 7
    with pytest.raises(ValueError):
        min_inputs(RuleConfig("nope"))
