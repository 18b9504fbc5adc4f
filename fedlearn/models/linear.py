"""Multinomial logistic regression: the inputs flattened, one linear layer (FedProx's model of Synthetic(a, b))."""

from __future__ import annotations

import math

from torch import nn

from ..registry import Entry
from .info import ModelInfo


def logistic_regression(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """``softmax(W x + b)`` over the flattened inputs (the softmax is in the loss)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


ENTRY = Entry("logreg", logistic_regression, "multinomial logistic regression on any float inputs",
              info=ModelInfo(None, takes_input_shape=True))  # fmt: skip
