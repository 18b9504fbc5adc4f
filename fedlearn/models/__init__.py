"""Models chosen by ``--model``: one registry entry each (:data:`MODELS`), built from the number of classes.

An entry's ``part`` builds a fresh ``nn.Module`` that maps a batch to logits, called with ``num_classes`` and the
values of the flags the entry declares as keywords; its ``info``
(:class:`~.info.ModelInfo`) says which inputs it takes, checked against the dataset's description before any
file is read. Greyscale 28x28: :mod:`.cnn`, :mod:`.mlp`, LeNet-5 (:mod:`.lenet`); CIFAR-10: NIID-Bench's CNN
(:mod:`.lenet`), ResNet-20 (:mod:`.resnet`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..core.usercode import SPEC_FORMS, first_line
from ..data import dataset_info
from ..data.dataset import describe_input
from ..errors import UsageError
from ..registry import Flag, Flags, Registry, require
from . import cnn, lenet, linear, mlp, resnet, text, user
from .info import ModelInfo
from .resnet import BasicBlock


def _default(flags: Flags, script: str) -> str | None:
    """The dataset's own default model, else the first built-in model that takes its samples (None: none does)."""
    data = dataset_info(flags.dataset)
    if data.default_model is not None:
        return data.default_model
    fitting = (name for name, entry in MODELS.entries.items() if entry.info.accepts(data.input_shape, data.input_dtype))
    return next(fitting, None)


def _fits_the_dataset(flags: Flags, script: str) -> None:
    """The model takes the dataset's samples (from what each says of itself)."""
    data = dataset_info(flags.dataset)
    require(flags.model is not None, f"--model: no built-in model takes {describe_input(data.input_shape)} "
            f"(--dataset {flags.dataset}); give your own, --model {SPEC_FORMS}")  # fmt: skip
    model = MODELS[flags.model]
    fitting = [name for name, entry in MODELS.entries.items() if entry.info.accepts(data.input_shape, data.input_dtype)]
    takes = describe_input(model.info.input_shape) + (" of token ids" if model.info.input_dtype == torch.int64 else "")
    require(model.info.accepts(data.input_shape, data.input_dtype), f"--model {flags.model} takes {takes}; "
            f"--dataset {flags.dataset} needs one of {', '.join(sorted(fitting))}")  # fmt: skip
    other_processes = flags.get("workers", 1) > 1 or flags.get("distributed")
    require(not (flags.model.startswith("python:") and other_processes),
            f"model {flags.model}: a function given from Python reaches worker processes by its importable name; "
            f"define it in a module (or a file: --model FILE.py:FUNCTION) for --workers and --distributed")  # fmt: skip


MODELS = Registry.of(
    "models",
    Flag("model", None, str, derive=_default,
         help="greyscale (MNIST, Fashion-MNIST): cnn = two 5x5 conv blocks and a linear layer (29k weights), "
              "cnn-fedavg = McMahan et al.'s (1.66M), lenet5, mlp; CIFAR-10: cnn-cifar = NIID-Bench's CNN (62k), "
              "resnet20 = He et al.'s ResNet-20 (270k) with GroupNorm instead of BatchNorm, since batch statistics "
              "averaged over non-IID clients hurt (Hsieh et al. 2020) (default: the dataset's: cnn, or cnn-cifar on "
              "CIFAR-10)"),
    [*cnn.ENTRIES, mlp.ENTRY, *lenet.ENTRIES, resnet.ENTRY, *text.ENTRIES, linear.ENTRY],
    flags=(Flag("no_channels_last", False, headline=False,
                help="keep conv weights and images in the default NCHW layout (channels-last is faster on CPU)"),),
    check=_fits_the_dataset,
    resolve=user.resolve,
    spec=SPEC_FORMS,
)  # fmt: skip
"""Every model by name (``--model``): adding one is a module with its builder and one entry here."""


def build_model(
    name: str,
    num_classes: int = 10,
    channels_last: bool = False,
    flags: Mapping[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """A freshly initialised model (uses torch's global RNG: seed it first); ``flags``: the run's, whose values
    of the flags the model declares it is built with (else their defaults); ``input_shape``: one sample's, for a
    model whose factory asks for it (a user's).

    ``channels_last`` stores conv weights (and so activations) channels-last:
    the same numbers' layout, faster convolutions on CPU (see fedlearn.bench).
    """
    entry = MODELS[name]
    shape = {"input_shape": input_shape} if entry.info.takes_input_shape else {}
    model = entry.part(num_classes=num_classes, **shape, **entry.own(flags))
    return model.to(memory_format=torch.channels_last) if channels_last else model


def check_output(model: nn.Module, sample: torch.Tensor, num_classes: int, name: str) -> None:
    """UsageError naming ``--model`` unless the model maps ``sample`` (a batch of the data's inputs) to
    ``(batch, num_classes)`` logits: checked once before training."""
    model.eval()
    try:
        with torch.no_grad():
            out = model(sample)
    except Exception as exc:  # noqa: BLE001 - a user's model failing is one line
        raise UsageError(f"--model {name}: its forward pass fails on a batch of the data's inputs "
                         f"{tuple(sample.shape)} ({first_line(exc)})") from None  # fmt: skip
    expected = (sample.shape[0], num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(f"--model {name}: maps a batch of the data's inputs {tuple(sample.shape)} to {got}, "
                         f"not {expected} logits ({num_classes} classes)")  # fmt: skip


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MODELS", "BasicBlock", "ModelInfo", "build_model", "count_parameters"]
