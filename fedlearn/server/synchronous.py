"""The synchronous server (FedAvg): the global model, stepped once per round by the server pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..comm.codecs import Codec
from .pipeline import Batch, RobustAggregator, ServerPipeline, decode_delta
from .scaffold import ServerControl
from .steps import build_step


class SyncServer:
    """Holds the global model; each round's updates go through the pipeline (checks, clip, rule, step).

    With the default pipeline a round is FedAvg's ``w <- sum_k (n_k / sum_j n_j) w_k``;
    a round whose updates the defences all reject keeps the model. The server
    replaces ``weights`` on every step, never changes it in place. With a ``codec`` (``--compress``) clients send
    encoded deltas, decoded here into points before anything else looks at them.
    """

    def __init__(
        self,
        weights: torch.Tensor,
        pipeline: ServerPipeline | None = None,
        control: ServerControl | None = None,
        codec: Codec | None = None,
    ) -> None:
        self.weights = weights.clone()
        self.pipeline = pipeline or ServerPipeline(RobustAggregator(weights.numel()), build_step())
        self.aggregator = self.pipeline.aggregator
        self.control = control  # SCAFFOLD's server control variate
        self.codec = codec

    def step(
        self,
        sent: Sequence[torch.Tensor],
        clients: Sequence[int],
        counts: Sequence[int],
        key: int,
        control_deltas: Sequence[torch.Tensor | None] = (),
    ) -> None:
        """Apply round ``key``'s updates (weights ``sent`` by ``clients`` holding ``counts`` samples; with
        SCAFFOLD, their ``control_deltas``)."""
        if self.codec is not None:
            sent, clients, counts = self._decoded(sent, clients, counts)
        stepped = self.pipeline.apply(self.weights, Batch(sent, clients, counts, origin=self.weights), key)
        if stepped is not None:  # else the defences left nothing: the model stays
            self.weights = stepped
        if self.control is not None:
            self.control.update(clients, sent, control_deltas or [None] * len(sent))

    def _decoded(
        self, sent: Sequence[torch.Tensor], clients: Sequence[int], counts: Sequence[int]
    ) -> tuple[list[torch.Tensor], list[int], list[int]]:
        """The decodable uploads as points (the weights plus each delta), with their senders and counts."""
        kept = []
        for payload, client, count in zip(sent, clients, counts):
            delta = decode_delta(self.codec, payload, self.aggregator)
            if delta is not None:
                kept.append((self.weights + delta.to(self.weights), client, count))
        return [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]

    def state(self) -> dict[str, Any]:
        """The model, the defences' counters and the server step's state, for a checkpoint."""
        return {
            "weights": self.weights.detach().cpu(),
            "aggregator": self.aggregator.state(),
            "server_step": self.pipeline.step.state(),
            **(self.control.state() if self.control is not None else {}),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`."""
        self.weights = state["weights"].to(self.weights.device, self.weights.dtype)
        self.aggregator.restore(state["aggregator"])
        self.pipeline.step.restore(state["server_step"])
        if self.control is not None:
            self.control.restore(state)

    def summary(self) -> dict[str, Any]:
        """The defences' counts (and SCAFFOLD's control variates) for the Results table and JSON."""
        return {**self.aggregator.summary(), **(self.control.summary() if self.control is not None else {})}
