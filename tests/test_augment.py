"""--augment crop-flip: deterministic per seed, shapes and layout kept, crops inside the padded image (as
torchvision's RandomCrop(32, padding=4) and RandomHorizontalFlip cut them), and none leaves batches alone."""

import pytest
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from fedlearn.client import LocalJobConfig, LocalTrainer
from fedlearn.core.flat import get_flat
from fedlearn.core.training import Passes, make_optimizer, train
from fedlearn.data import Dataset
from fedlearn.data.augment import PAD, CropFlip, build_augment
from fedlearn.loops.centralized import Epochs, run_centralized
from fedlearn.loops.skeleton import LoopOptions
from fedlearn.models import build_model

FILL = torch.tensor([-1.0, -2.0, -3.0])


def batch(n=64):
    """Images whose every pixel value is unique and positive (so a moved pixel is found, padding is negative)."""
    return torch.arange(n * 3 * 32 * 32, dtype=torch.float32).reshape(n, 3, 32, 32) + 1


def test_same_seed_same_batch_other_seed_other_batch():
    x, augment = batch(), CropFlip(FILL)
    first = augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(first, augment(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, augment(x, torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_shape_and_memory_layout_are_kept(layout):
    x = batch(8).contiguous(memory_format=layout)
    out = CropFlip(FILL)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous(memory_format=layout)


def test_without_padding_each_image_is_itself_or_its_mirror():
    x = batch()
    out = CropFlip(FILL, pad=0)(x, torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert (mirrored ^ same).all() and 16 < int(mirrored.sum()) < 48  # about half, each one or the other


def test_crops_are_torchvisions_crops_of_the_padded_image():
    x, g = batch(), torch.Generator().manual_seed(5)
    out = CropFlip(FILL)(x, g)
    replay = torch.Generator().manual_seed(5)  # the draws, in CropFlip's order: rows, columns, then flips
    top, left = torch.randint(0, 2 * PAD + 1, (2, 64), generator=replay)
    flip = torch.rand(64, generator=replay) < 0.5
    for i in range(64):
        padded = torch.stack([TF.pad(x[i, c : c + 1], [PAD], fill=float(FILL[c])) for c in range(3)]).squeeze(1)
        crop = TF.crop(padded, int(top[i]), int(left[i]), 32, 32)
        assert torch.equal(out[i], TF.horizontal_flip(crop) if flip[i] else crop)
    assert set(top.tolist()) == set(range(2 * PAD + 1)) == set(left.tolist())  # every offset 0..8 drawn
    padding = out < 0
    assert torch.equal(out[padding], FILL.view(1, 3, 1, 1).expand_as(out)[padding])  # padding is the fill


class Recorder(nn.Module):
    """A linear model that keeps every batch it is given."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 32 * 32, 10)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.linear(x.flatten(1))


def test_augment_none_trains_on_the_batches_untouched():
    assert build_augment("none", FILL) is None
    x, y = batch(20), torch.arange(20) % 10
    model = Recorder()
    train(model, make_optimizer("sgd", model.parameters(), 0.0), x, y,
          Passes(torch.arange(20), 1, 8, torch.Generator().manual_seed(0), build_augment("none", FILL)))  # fmt: skip
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    assert [torch.equal(s, x[order[i : i + 8]]) for i, s in zip(range(0, 20, 8), model.seen)] == [True] * 3


def test_crop_flip_changes_the_batches_training_sees():
    x, y = batch(20), torch.arange(20) % 10
    model, augment = Recorder(), build_augment("crop-flip", FILL)
    train(model, make_optimizer("sgd", model.parameters(), 0.0), x, y,
          Passes(torch.arange(20), 1, 20, torch.Generator().manual_seed(0), augment))  # fmt: skip
    seen = model.seen[0]
    assert seen.shape == x.shape and not torch.equal(seen.sort(0).values, x)  # not merely x reordered


def colour_data(n=40):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    return Dataset("colour", x, y, x, y, mean=(0.5,) * 3, std=(0.25,) * 3, source="test")


def test_client_jobs_and_the_baseline_train_on_augmented_batches_when_asked():
    data, weights = colour_data(), {}
    for augment in ("none", "crop-flip", "crop-flip"):
        torch.manual_seed(0)
        config = LocalJobConfig("sgd", 0.1, 10, 1, seed=0, augment=augment)
        trainer = LocalTrainer(build_model("cnn-cifar"), data, [torch.arange(40)], config)
        job = trainer.run(0, get_flat(trainer.model), job_key=1).payload
        torch.manual_seed(0)
        model = build_model("cnn-cifar")
        run_centralized(model, data, Epochs(1, 10, "sgd", 0.1, augment), LoopOptions(0, show_progress=False))
        weights.setdefault(augment, []).append((job, get_flat(model)))
    ((none_job, none_base),) = weights["none"]
    (job, base), (job_again, base_again) = weights["crop-flip"]
    assert not torch.equal(job, none_job) and not torch.equal(base, none_base)
    assert torch.equal(job, job_again) and torch.equal(base, base_again)  # the same draws for the same seed
