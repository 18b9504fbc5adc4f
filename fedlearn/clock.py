"""Simulated client speeds and job durations on a virtual clock (no sleeping).

Each client gets a training rate (samples per simulated second) drawn once from
the seed; a local job lasts ``samples / rate + comm_delay`` simulated seconds.
Synchronous rounds last as long as their slowest picked client.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DELAY_MODELS = ("none", "straggler", "lognormal", "uniform")


@dataclass(frozen=True)
class ClientSpeeds:
    """Per-client training rates and the communication delay of one job (download + upload)."""

    rates: np.ndarray  # samples per simulated second, one per client
    comm_delay: float = 0.0

    def job_duration(self, client: int, samples: int) -> float:
        """Simulated seconds for ``client`` to receive the model, train ``samples`` samples and reply."""
        return samples / float(self.rates[client]) + self.comm_delay

    def round_duration(self, clients: list[int] | np.ndarray, samples: list[int] | np.ndarray) -> float:
        """A synchronous round: the slowest of the picked clients' jobs."""
        return max(self.job_duration(int(c), int(s)) for c, s in zip(clients, samples))


def draw_speeds(
    num_clients: int,
    rng: np.random.Generator,
    delay: str = "none",
    client_rate: float = 1000.0,
    comm_delay: float = 0.0,
    straggler_fraction: float = 0.25,
    straggler_slowdown: float = 10.0,
    delay_spread: float = 1.0,
) -> ClientSpeeds:
    """Draw every client's rate once.

    - ``none``: all clients train at ``client_rate``.
    - ``straggler``: ``round(straggler_fraction * N)`` clients, picked at random,
      are ``straggler_slowdown`` times slower.
    - ``lognormal``: slowdown factors ``exp(sigma * Z)`` with ``sigma = delay_spread``
      (median 1).
    - ``uniform``: slowdown factors uniform in ``[1, 1 + delay_spread]``.
    """
    slowdown = np.ones(num_clients)
    if delay == "straggler":
        count = int(round(straggler_fraction * num_clients))
        slowdown[rng.choice(num_clients, size=count, replace=False)] = straggler_slowdown
    elif delay == "lognormal":
        slowdown = np.exp(delay_spread * rng.standard_normal(num_clients))
    elif delay == "uniform":
        slowdown = rng.uniform(1.0, 1.0 + delay_spread, size=num_clients)
    elif delay != "none":
        raise ValueError(f"unknown delay model {delay!r}; choose from {', '.join(DELAY_MODELS)}")
    return ClientSpeeds(rates=client_rate / slowdown, comm_delay=comm_delay)
