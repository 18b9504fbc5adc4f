"""Data augmentation chosen by ``--augment``, applied to each training batch as tensors (never per sample).

``crop-flip`` is the standard CIFAR-10 augmentation (He et al. 2016): pad the image by 4 pixels on every side,
take a random 32x32 crop and flip it left-right with probability 1/2, as torchvision's ``RandomCrop(32,
padding=4)`` and ``RandomHorizontalFlip()`` do to one image. Here the whole batch is done by one gather; the
draws come from the job's seeded generator, so runs are the same bit for bit. The padding is black (pixel value
0 before normalization), as torchvision pads the raw image.
"""

from __future__ import annotations

import torch

from ..core.training import Augment
from ..registry import Entry, Flag, Flags, Registry, require
from . import dataset_info

PAD = 4


class CropFlip:
    """Random ``PAD``-padded crops and horizontal flips of a batch; ``fill`` is each channel's padding value."""

    def __init__(self, fill: torch.Tensor, pad: int = PAD):
        self.fill = fill.float()
        self.pad = pad

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = images.shape
        p, device = self.pad, images.device
        draws = torch.cat([torch.randint(0, 2 * p + 1, (2, b), generator=generator),
                           (torch.rand(b, generator=generator) < 0.5).long()[None]]).to(device)  # fmt: skip
        top, left, flip = draws[0, :, None], draws[1, :, None], draws[2, :, None].bool()  # (drawn on the CPU)
        columns = torch.arange(w, device=device)
        columns = left + torch.where(flip, w - 1 - columns, columns)  # (b, w): read right to left when flipped
        rows = top + torch.arange(h, device=device)  # (b, h)
        height, width = h + 2 * p, w + 2 * p
        if self.fill.device != device:
            self.fill = self.fill.to(device)
        padded = self.fill.expand(b, height, width, c).clone()  # images as (b, h, w, c)
        padded[:, p : p + h, p : p + w] = images.permute(0, 2, 3, 1)
        first = torch.arange(b, device=device)[:, None, None] * (height * width)
        pixel = first + rows[:, :, None] * width + columns[:, None, :]
        out = padded.view(-1, c).index_select(0, pixel.view(-1))  # one gather: (b * h * w, c)
        out = out.view(b, h, w, c).permute(0, 3, 1, 2)  # channels-last strides
        return out if images.is_contiguous(memory_format=torch.channels_last) else out.contiguous()


def _images_only(flags: Flags, script: str) -> None:
    shape = dataset_info(flags.dataset).input_shape
    require(len(shape) == 3, f"--augment crop-flip crops and flips images (C, H, W); --dataset {flags.dataset}'s "
            f"samples are {shape}")  # fmt: skip


AUGMENTATIONS = Registry.of(
    "augmentations",
    Flag("augment", None, str, group="data", older="none",
         derive=lambda flags, script: dataset_info(flags.dataset).default_augment,
         help="training batches only: crop-flip = random crops of the 4-pixel-padded image and left-right flips, "
              "drawn from the run's seed (default: the dataset's: crop-flip on CIFAR-10, none on the greyscale sets)"),
    [Entry("none", None, "batches as they are"),
     Entry("crop-flip", CropFlip, "padded random crops and flips", check=_images_only)],
    off="none",
)  # fmt: skip
"""``--augment``'s choices: each entry's part builds its augmentation from the channels' padding value (None:
batches as they are)."""


def build_augment(name: str, fill: torch.Tensor) -> Augment | None:
    """The augmentation ``name`` (None for ``none``); ``fill``: each channel's padding value, normalized."""
    factory = AUGMENTATIONS[name].part
    return None if factory is None else factory(fill)
