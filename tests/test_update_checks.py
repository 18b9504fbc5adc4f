import pytest
import torch

from fedlearn.server.checks import clip_norm, rejection_reason


def test_a_good_vector_passes():
    assert rejection_reason(torch.zeros(6), 6) is None
    assert rejection_reason(torch.zeros(6, dtype=torch.float64), 6, torch.float64) is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite(bad):
    vector = torch.zeros(6)
    vector[3] = bad
    assert rejection_reason(vector, 6) == "non-finite"


def test_shape_and_dtype():
    assert rejection_reason(torch.zeros(5), 6) == "shape"
    assert rejection_reason(torch.zeros(7), 6) == "shape"
    assert rejection_reason(torch.zeros(2, 3), 6) == "shape"
    assert rejection_reason(torch.tensor(0.0), 1) == "shape"
    assert rejection_reason(torch.zeros(6, dtype=torch.float64), 6) == "dtype"
    assert rejection_reason(torch.zeros(6, dtype=torch.int64), 6) == "dtype"
    assert rejection_reason(torch.zeros(6), 6, torch.float16) == "dtype"
    assert rejection_reason(torch.full((5,), float("nan"), dtype=torch.float64), 6) == "shape"  # shape first
    assert rejection_reason([0.0] * 6, 6) == "type"


def test_clip_norm_scales_long_updates():
    delta = torch.tensor([3.0, 4.0])
    clipped = clip_norm(delta, 1.0)
    assert torch.allclose(clipped, torch.tensor([0.6, 0.8]))
    assert torch.equal(delta, torch.tensor([3.0, 4.0]))
    assert torch.linalg.vector_norm(clip_norm(torch.randn(1000) * 50, 2.5)).item() == pytest.approx(2.5, rel=1e-5)
    assert torch.equal(clip_norm(delta, 0.0), torch.zeros(2))
    assert clip_norm(delta.double(), 1.0).dtype == torch.float64


def test_clip_norm_leaves_short_updates_alone():
    delta = torch.tensor([3.0, 4.0])
    for max_norm in (5.0, 10.0):
        same = clip_norm(delta, max_norm)
        assert torch.equal(same, delta) and same.data_ptr() != delta.data_ptr()


def test_clip_norm_rejects_bad_inputs():
    with pytest.raises(ValueError):
        clip_norm(torch.ones(3), -1.0)
    with pytest.raises(ValueError):
        clip_norm(torch.ones(3), float("nan"))
    with pytest.raises(ValueError):
        clip_norm(torch.tensor([1.0, float("inf")]), 1.0)
