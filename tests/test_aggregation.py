import pytest
import torch

from fedlearn.server.rules import weighted_average


def test_weighted_average_matches_hand_computation():
    stack = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
    counts = torch.tensor([100.0, 100.0, 200.0])
    # (1*100 + 3*100 + 10*200) / 400 = 6.0 ; (2*100 + 4*100 + 0*200) / 400 = 1.5
    assert torch.allclose(weighted_average(stack, counts), torch.tensor([6.0, 1.5]))


def test_weighted_average_is_not_the_plain_mean_for_unequal_counts():
    stack = torch.tensor([[0.0], [1.0]])
    assert weighted_average(stack, torch.tensor([3.0, 1.0])).item() == pytest.approx(0.25)
    assert weighted_average(stack, torch.tensor([1.0, 1.0])).item() == pytest.approx(0.5)


def test_weighted_average_rejects_bad_inputs():
    with pytest.raises(ValueError):
        weighted_average(torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(ValueError):
        weighted_average(torch.zeros(2, 3), torch.zeros(2))
