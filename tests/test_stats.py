"""Statistics over seeds and clients, against hand computations."""

import math

import pytest

from fedlearn.analysis.stats import fairness, summarize, t_quantile


def test_t_quantiles_match_the_tables():
    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(9) == pytest.approx(2.262, abs=1e-3)


def test_mean_std_and_interval_of_three_seeds_by_hand():
    s = summarize([0.80, 0.82, 0.84])
    # mean 0.82; deviations -0.02, 0, 0.02: s = sqrt(0.0008 / 2) = 0.02; half width 4.303 * 0.02 / sqrt(3)
    assert s.mean == pytest.approx(0.82) and s.std == pytest.approx(0.02)
    half = 4.302653 * 0.02 / math.sqrt(3)
    assert s.low == pytest.approx(0.82 - half, abs=1e-6) and s.high == pytest.approx(0.82 + half, abs=1e-6)
    assert (s.n, s.never) == (3, 0)


def test_a_group_of_one_has_a_mean_and_no_spread():
    s = summarize([0.5])
    assert (s.n, s.mean, s.std, s.low, s.high) == (1, 0.5, None, None, None)


def test_never_is_counted_and_not_averaged_in():
    s = summarize([10.0, None, 14.0])
    assert (s.n, s.never, s.mean) == (3, 1, 12.0)
    assert s.std == pytest.approx(math.sqrt(8))
    none = summarize([None, None])
    assert (none.n, none.never, none.mean) == (2, 2, None)


def test_fairness_takes_the_mean_of_the_worst_and_best_tenth():
    accuracies = [i / 20 for i in range(20)] + [None]  # 20 clients with a held-out set, one without
    f = fairness(accuracies)
    assert f["clients"] == 20 and f["mean"] == pytest.approx(0.475)
    assert f["worst_10pct"] == pytest.approx((0.0 + 0.05) / 2) and f["best_10pct"] == pytest.approx((0.95 + 0.9) / 2)
    assert f["std"] == pytest.approx(math.sqrt(sum((i / 20 - 0.475) ** 2 for i in range(20)) / 20))
    assert fairness([0.3])["worst_10pct"] == 0.3 and fairness([None]) is None
