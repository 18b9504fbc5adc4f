import numpy as np
import pytest
import torch

from fedlearn.data.partitions import (
    PartitionSpec,
    iid_partition,
    label_histograms,
    label_skew,
    make_partition,
    partition_sizes,
)
from fedlearn.errors import UsageError

LABELS = torch.from_numpy(np.random.default_rng(0).integers(0, 10, 3000))
SPECS = [
    PartitionSpec("iid"),
    PartitionSpec("iid", size_skew=1.0),
    PartitionSpec("dirichlet", dirichlet_alpha=0.1),
    PartitionSpec("dirichlet", dirichlet_alpha=0.1, size_skew=1.0),
    PartitionSpec("shards", shards_per_client=2),
    PartitionSpec("classes", classes_per_client=2),
    PartitionSpec("classes", classes_per_client=3, size_skew=0.5),
]


def check_disjoint_complete_nonempty(parts, n):
    joined = torch.cat(parts)
    assert joined.numel() == n
    assert torch.equal(joined.sort().values, torch.arange(n))  # every index exactly once
    assert min(partition_sizes(parts)) >= 1


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}-skew{s.size_skew}")
@pytest.mark.parametrize("clients", [7, 20])
def test_every_partition_is_disjoint_complete_nonempty_and_seeded(spec, clients):
    a = make_partition(spec, LABELS, clients, np.random.default_rng(1))
    b = make_partition(spec, LABELS, clients, np.random.default_rng(1))
    c = make_partition(spec, LABELS, clients, np.random.default_rng(2))
    check_disjoint_complete_nonempty(a, 3000)
    assert len(a) == clients
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("n, clients", [(100, 8), (103, 8), (60000, 7), (10, 10), (5, 1)])
def test_iid_partition_is_balanced_for_any_client_count(n, clients):
    parts = iid_partition(n, clients, np.random.default_rng(0))
    check_disjoint_complete_nonempty(parts, n)
    sizes = partition_sizes(parts)
    assert max(sizes) - min(sizes) <= 1
    assert not torch.equal(parts[0], torch.arange(sizes[0]))  # shuffled, not a contiguous slice


def skew_of(spec, clients=10, seed=0):
    parts = make_partition(spec, LABELS, clients, np.random.default_rng(seed))
    return float(label_skew(label_histograms(parts, LABELS)).mean()), parts


def test_iid_has_almost_no_label_skew_and_one_label_clients_have_the_most():
    assert skew_of(PartitionSpec("iid"))[0] < 0.1
    skew, parts = skew_of(PartitionSpec("classes", classes_per_client=1))
    histograms = label_histograms(parts, LABELS)
    assert ((histograms > 0).sum(dim=1) == 1).all()
    assert skew == pytest.approx(0.9, abs=0.02)  # 10 balanced labels, each client holds one


def test_classes_partition_gives_every_client_at_most_its_labels():
    _, parts = skew_of(PartitionSpec("classes", classes_per_client=2), clients=13)
    assert ((label_histograms(parts, LABELS) > 0).sum(dim=1) <= 2).all()


def test_shards_are_equal_and_label_skewed():
    skew, parts = skew_of(PartitionSpec("shards", shards_per_client=2), clients=10)
    sizes = partition_sizes(parts)
    assert max(sizes) - min(sizes) <= 1 and skew > 0.6
    assert ((label_histograms(parts, LABELS) > 0).sum(dim=1) <= 4).all()  # 2 shards, each straddles <= 2 labels


def test_small_dirichlet_alpha_is_more_skewed_than_large():
    small = np.mean([skew_of(PartitionSpec("dirichlet", dirichlet_alpha=0.1), seed=s)[0] for s in range(3)])
    large = np.mean([skew_of(PartitionSpec("dirichlet", dirichlet_alpha=100.0), seed=s)[0] for s in range(3)])
    assert small > 0.5 > 0.15 > large


def test_size_skew_makes_sizes_unequal_without_label_skew():
    skew, parts = skew_of(PartitionSpec("iid", size_skew=1.0))
    sizes = np.array(partition_sizes(parts))
    assert sizes.std() / sizes.mean() > 0.3 and skew < 0.1


def test_extreme_dirichlet_with_many_clients_still_gives_everyone_a_sample():
    parts = make_partition(PartitionSpec("dirichlet", dirichlet_alpha=0.01), LABELS, 1000, np.random.default_rng(0))
    check_disjoint_complete_nonempty(parts, 3000)


@pytest.mark.parametrize(
    "spec, clients, message",
    [
        (PartitionSpec("iid"), 3001, "--num_clients"),
        (PartitionSpec("classes", classes_per_client=1), 8, "cannot cover"),
        (PartitionSpec("classes", classes_per_client=11), 20, "--classes_per_client"),
        (PartitionSpec("shards", shards_per_client=400), 8, "shards exceeds"),
        (PartitionSpec("shards", size_skew=1.0), 8, "--size_skew"),
        (PartitionSpec("dirichlet", dirichlet_alpha=0.0), 8, "--dirichlet_alpha"),
    ],
)
def test_impossible_requests_fail_with_a_clear_message(spec, clients, message):
    with pytest.raises(UsageError, match=message):
        make_partition(spec, LABELS, clients, np.random.default_rng(0))
