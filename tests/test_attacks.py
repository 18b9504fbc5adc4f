from statistics import NormalDist

import numpy as np
import pytest
import torch

from fedlearn.core import seeding
from fedlearn.server.attacks import (
    ATTACKS,
    DEFAULT_SCALE,
    NEEDS_HONEST,
    alie_z,
    choose_byzantine,
    corrupt,
    flip_labels,
)

MASK = torch.tensor([False, True, False, True, False])


def batch(k: int = 5, d: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, d, generator=torch.Generator().manual_seed(seed)) + torch.arange(d)


def test_constants():
    assert ATTACKS == ("none", "signflip", "gaussian", "labelflip", "alie", "ipm")
    assert NEEDS_HONEST == frozenset({"alie", "ipm"})
    assert DEFAULT_SCALE == {"signflip": 4.0, "gaussian": 1.0, "ipm": 0.5}
    assert seeding.BYZANTINE == 8


@pytest.mark.parametrize("scale, c", [(None, 4.0), (2.0, 2.0)])
def test_signflip(scale, c):
    deltas = batch()
    before = deltas.clone()
    out = corrupt("signflip", deltas, MASK, scale=scale)
    assert torch.allclose(out[MASK], -c * before[MASK])
    assert torch.equal(out[~MASK], before[~MASK])
    assert torch.equal(deltas, before)


def test_gaussian_has_the_requested_std_and_is_reproducible():
    deltas = batch(d=20000)
    before = deltas.clone()
    out = corrupt("gaussian", deltas, MASK, scale=3.0, generator=torch.Generator().manual_seed(7))
    noise = out[MASK]
    assert noise.std().item() == pytest.approx(3.0, rel=0.03)
    assert abs(noise.mean().item()) < 0.1
    assert torch.equal(out[~MASK], before[~MASK]) and torch.equal(deltas, before)
    again = corrupt("gaussian", deltas, MASK, scale=3.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(out, again)
    other = corrupt("gaussian", deltas, MASK, scale=3.0, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(out, other)
    default = corrupt("gaussian", deltas, MASK, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(default[MASK] * 3.0, noise)  # default sigma 1, same draws
    with pytest.raises(ValueError):
        corrupt("gaussian", deltas, MASK, scale=-1.0)


def test_alie_row_is_honest_mean_plus_z_std():
    deltas = batch()
    before = deltas.clone()
    honest = before[~MASK]
    mu, sigma = honest.mean(dim=0), honest.std(dim=0, unbiased=False)
    out = corrupt("alie", deltas, MASK)
    z = alie_z(5, 2)
    for row in out[MASK]:
        assert torch.allclose(row, mu + z * sigma, atol=1e-6)
    out = corrupt("alie", deltas, MASK, scale=1.5)
    assert torch.allclose(out[MASK], (mu + 1.5 * sigma).expand(2, -1), atol=1e-6)
    assert not torch.allclose(out[MASK], (mu + 1.5 * honest.std(dim=0)).expand(2, -1), atol=1e-3)  # population std
    assert torch.equal(out[~MASK], before[~MASK]) and torch.equal(deltas, before)


@pytest.mark.parametrize("scale, eps", [(None, 0.5), (2.0, 2.0)])
def test_ipm_row_is_minus_eps_honest_mean(scale, eps):
    deltas = batch()
    before = deltas.clone()
    out = corrupt("ipm", deltas, MASK, scale=scale)
    expected = -eps * before[~MASK].mean(dim=0)
    assert torch.allclose(out[MASK], expected.expand(2, -1), atol=1e-6)
    assert torch.equal(out[~MASK], before[~MASK]) and torch.equal(deltas, before)


def test_omniscient_attacks_without_honest_rows_use_their_own_deltas():
    deltas = batch(k=3)
    everyone = torch.ones(3, dtype=torch.bool)
    ipm = corrupt("ipm", deltas, everyone)
    assert torch.allclose(ipm, (-0.5 * deltas.mean(dim=0)).expand(3, -1), atol=1e-6)
    alie = corrupt("alie", deltas, everyone, scale=1.0)
    expected = deltas.mean(dim=0) + deltas.std(dim=0, unbiased=False)
    assert torch.allclose(alie, expected.expand(3, -1), atol=1e-6)


@pytest.mark.parametrize("attack", ATTACKS)
def test_no_op_cases_return_an_equal_copy(attack):
    deltas = batch()
    out = corrupt(attack, deltas, torch.zeros(5, dtype=torch.bool), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, deltas) and out.data_ptr() != deltas.data_ptr()
    if attack in ("none", "labelflip"):
        assert torch.equal(corrupt(attack, deltas, MASK), deltas)
    else:
        assert not torch.equal(corrupt(attack, deltas, MASK, generator=torch.Generator().manual_seed(0)), deltas)


def test_corrupt_rejects_bad_inputs():
    deltas = batch()
    with pytest.raises(ValueError, match="unknown attack"):
        corrupt("flood", deltas, MASK)
    with pytest.raises(ValueError):
        corrupt("signflip", deltas, MASK.int())
    with pytest.raises(ValueError):
        corrupt("signflip", deltas, MASK[:4])
    with pytest.raises(ValueError):
        corrupt("signflip", deltas[0], MASK)
    with pytest.raises(ValueError):
        corrupt("ipm", deltas, MASK, scale=float("nan"))


def test_alie_z_known_value():
    # n = 50, f = 24: s = floor(26) - 24 = 2, z = Phi^-1(48 / 50)
    assert alie_z(50, 24) == pytest.approx(NormalDist().inv_cdf(0.96))
    assert alie_z(50, 24) == pytest.approx(1.7507, abs=1e-4)
    # n = 10, f = 2: s = 6 - 2 = 4, z = Phi^-1(0.6)
    assert alie_z(10, 2) == pytest.approx(0.2533, abs=1e-4)


def test_alie_z_edge_cases_are_finite_and_monotone():
    assert alie_z(1, 0) == 0.0 and alie_z(1, 1) == 0.0
    zs = [alie_z(10, f) for f in range(11)]
    assert all(np.isfinite(zs))
    assert zs == sorted(zs)
    assert zs[-1] == pytest.approx(NormalDist().inv_cdf(1 - 1 / 20))  # Byzantine majority: clamped
    assert alie_z(2, 0) == pytest.approx(NormalDist().inv_cdf(1 / 4))  # s = n: clamped
    with pytest.raises(ValueError):
        alie_z(0, 0)
    with pytest.raises(ValueError):
        alie_z(5, 6)


def test_choose_byzantine():
    ids = choose_byzantine(3, 100, 10)
    assert ids == choose_byzantine(3, 100, 10)
    assert len(ids) == 10 and len(set(ids)) == 10 and list(ids) == sorted(ids)
    assert all(isinstance(i, int) and 0 <= i < 100 for i in ids)
    assert ids != choose_byzantine(4, 100, 10)
    expected = sorted(seeding.numpy_rng(3, seeding.BYZANTINE).choice(100, size=10, replace=False).tolist())
    assert list(ids) == expected
    assert choose_byzantine(3, 5, 0) == ()
    assert choose_byzantine(3, 5, 5) == (0, 1, 2, 3, 4)
    with pytest.raises(ValueError):
        choose_byzantine(3, 5, 6)
    with pytest.raises(ValueError):
        choose_byzantine(3, 5, -1)


def test_flip_labels():
    labels = torch.arange(10)
    flipped = flip_labels(labels, 10)
    assert torch.equal(flipped, torch.arange(9, -1, -1)) and flipped.dtype == labels.dtype
    assert torch.equal(labels, torch.arange(10))
    assert torch.equal(flip_labels(torch.tensor([0, 2, 2]), 3), torch.tensor([2, 0, 0]))
    with pytest.raises(ValueError):
        flip_labels(torch.tensor([10]), 10)
    with pytest.raises(ValueError):
        flip_labels(torch.tensor([-1]), 10)
