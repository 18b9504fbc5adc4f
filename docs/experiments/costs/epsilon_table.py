"""The table of epsilon in docs/costs.md: fedlearn's tight figure, its RDP bound, and the usual Poisson
add-or-remove figure, for the privacy settings of the costs experiment (N = 1,000 clients, K = 100 a round,
30 rounds, delta 1e-5).

    python3 docs/experiments/costs/epsilon_table.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import dp_accounting  # noqa: E402
from dp_accounting.pld import PLDAccountant  # noqa: E402

from fedlearn.server.privacy import Accountant, PrivacyConfig  # noqa: E402

CLIENTS, PER_ROUND, ROUNDS, DELTA = 1000, 100, 30, 1e-5


def poisson_add_or_remove(noise: float) -> float:
    """The figure papers usually report: Poisson sampling at rate K/N, sensitivity S, add-or-remove."""
    accountant = PLDAccountant(dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    event = dp_accounting.PoissonSampledDpEvent(PER_ROUND / CLIENTS, dp_accounting.GaussianDpEvent(noise))
    accountant.compose(event, ROUNDS)
    return accountant.get_epsilon(DELTA)


def main() -> None:
    print("| z | fedlearn, tight (PLD) | fedlearn, RDP bound | Poisson add-or-remove, sensitivity S (the usual) |")
    print("| --- | --- | --- | --- |")
    for noise in (1.0, 2.0, 4.0):
        accountant = Accountant(PrivacyConfig(0.5, noise, DELTA, PER_ROUND, CLIENTS))
        print(
            f"| {noise:g} | {accountant.epsilon(ROUNDS):.2f} | {accountant.epsilon_rdp(ROUNDS):.2f} | "
            f"{poisson_add_or_remove(noise):.2f} |"
        )


if __name__ == "__main__":
    main()
