import numpy as np
import pytest
import torch

from fedlearn.errors import UsageError
from fedlearn.partition import iid_partition, partition_sizes


@pytest.mark.parametrize("n, clients", [(100, 8), (103, 8), (60000, 7), (10, 10), (5, 1)])
def test_iid_partition_is_disjoint_complete_and_balanced(n, clients):
    parts = iid_partition(n, clients, np.random.default_rng(0))
    assert len(parts) == clients
    joined = torch.cat(parts)
    assert joined.numel() == n
    assert torch.equal(joined.sort().values, torch.arange(n))  # every index exactly once
    sizes = partition_sizes(parts)
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_iid_partition_is_seeded_and_shuffled():
    a = iid_partition(1000, 4, np.random.default_rng(1))
    b = iid_partition(1000, 4, np.random.default_rng(1))
    c = iid_partition(1000, 4, np.random.default_rng(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert not torch.equal(a[0], torch.arange(250))  # not a contiguous slice


def test_more_clients_than_samples_is_a_usage_error():
    with pytest.raises(UsageError, match="--num_clients"):
        iid_partition(5, 6, np.random.default_rng(0))
