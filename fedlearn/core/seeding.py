"""Independent, reproducible random streams derived from one ``--seed``.

Every consumer of randomness (model init, partition, client selection, client
speeds, each local job's shuffling) gets its own stream keyed by a purpose and
small integers, so adding a consumer never shifts another's numbers, and a
client's local job depends only on (seed, round, client id).
"""

from __future__ import annotations

import numpy as np
import torch

# Stream purposes (never renumber: results depend on them).
INIT = 1
PARTITION = 2
SELECTION = 3
LOCAL_TRAIN = 4
CLOCK = 5
CENTRAL_TRAIN = 6
DISPATCH = 7
BYZANTINE = 8
HOLD_OUT = 9


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream named by ``keys`` under ``seed``."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def numpy_rng(seed: int, *keys: int) -> np.random.Generator:
    """A numpy Generator for one stream."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def torch_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU torch Generator for one stream."""
    generator = torch.Generator()
    generator.manual_seed(derive_seed(seed, *keys))
    return generator


COMPRESSION = 10  # QSGD's random rounding, per job
DP_NOISE = 11  # the Gaussian noise of client-level DP, per round
BANDWIDTH = 12  # clients' link speeds
DATA_FRACTION = 13  # the clients --data_fraction keeps
SYNTHETIC = 14  # Synthetic(alpha, beta)'s devices (from --synthetic_seed) and their split
STRAGGLERS = 15  # each round's stragglers (--round_stragglers) and their epochs
LOCAL_ONLY = 16  # each client's shuffles in the local-only baseline
PERSONAL = 17  # Ditto's personal jobs, per job
FINETUNE = 18  # fine-tuning before an evaluation, per evaluation and client


def select_clients(seed: int, round_index: int, num_clients: int, k: int) -> np.ndarray:
    """``k`` of ``num_clients`` uniformly without replacement, fresh for every round (sorted): a synchronous
    round's picked clients."""
    rng = numpy_rng(seed, SELECTION, round_index)
    return np.sort(rng.choice(num_clients, size=k, replace=False))
