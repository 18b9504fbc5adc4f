"""Recurrent models of LEAF's Shakespeare: 80-character windows of token ids in, the next character's logits out."""

from __future__ import annotations

import torch
from torch import nn

from ..registry import Entry
from .info import ModelInfo

VOCABULARY = 80  # LEAF's alphabet (fedlearn.data.shakespeare.VOCABULARY)
WINDOW = 80


class NextCharacter(nn.Module):
    """Embedding, a recurrent stack, and a linear layer on its last output (LEAF's Shakespeare model's shape)."""

    def __init__(self, recurrent: nn.Module, embedding: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCABULARY, embedding)
        self.recurrent = recurrent
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.recurrent(self.embed(tokens))
        return self.out(outputs[:, -1])


def lstm_leaf(num_classes: int = VOCABULARY) -> nn.Module:
    """LEAF's Shakespeare LSTM (Caldas et al. 2018): embedding 8, two LSTM layers of 256, a dense layer of
    ``num_classes`` (819,920 parameters with PyTorch's two LSTM biases)."""
    return NextCharacter(nn.LSTM(8, 256, num_layers=2, batch_first=True), 8, 256, num_classes)


def gru_small(num_classes: int = VOCABULARY) -> nn.Module:
    """A small recurrent model that trains in reasonable time on a few CPU cores: embedding 8, one GRU layer of 64,
    a dense layer (20,048 parameters)."""
    return NextCharacter(nn.GRU(8, 64, batch_first=True), 8, 64, num_classes)


TOKENS = ModelInfo((WINDOW,), input_dtype=torch.int64)
ENTRIES = (
    Entry("lstm-leaf", lstm_leaf, "LEAF's Shakespeare LSTM (embedding 8, 2 x LSTM 256; 820k)", info=TOKENS),
    Entry("gru-small", gru_small, "a small GRU for Shakespeare on CPUs (embedding 8, GRU 64; 20k)", info=TOKENS),
)
