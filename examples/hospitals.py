"""A made-up tabular dataset with natural clients: patients of six hospitals, each hospital's patients
measured a little differently (a shift of the features) and sick in other proportions (label skew).

``python3 examples/hospitals.py OUT.npz`` writes it as the arrays ``--dataset`` reads.
"""

import sys

import numpy as np

FEATURES, CLASSES, HOSPITALS = 20, 3, 6


def hospitals(seed: int = 0, patients: int = 3000) -> dict[str, np.ndarray]:
    """x_train, y_train, x_test, y_test and the hospital of every patient (client_train, client_test)."""
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((FEATURES, CLASSES))
    hospital = rng.integers(0, HOSPITALS, patients)
    shift = rng.normal(0, 0.7, (HOSPITALS, FEATURES))  # each hospital's own instruments
    prior = rng.dirichlet(np.full(CLASSES, 1.0), HOSPITALS)  # and its own mix of patients
    x = rng.standard_normal((patients, FEATURES)) + shift[hospital]
    logits = x @ truth + 2.0 * np.log(prior[hospital])
    y = (logits + rng.gumbel(size=logits.shape)).argmax(axis=1)
    test = rng.random(patients) < 0.25
    return {"x_train": x[~test].astype(np.float32), "y_train": y[~test], "client_train": hospital[~test],
            "x_test": x[test].astype(np.float32), "y_test": y[test], "client_test": hospital[test]}  # fmt: skip


if __name__ == "__main__":
    np.savez(sys.argv[1] if len(sys.argv) > 1 else "hospitals.npz", **hospitals())
