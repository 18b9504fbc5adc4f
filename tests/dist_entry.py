"""Test-only entry point for distributed runs: the real scripts, with a fault injected into one worker rank.

``FEDLEARN_TEST_FAULT=kill:RANK:N``: worker RANK kills itself (SIGKILL) instead of sending its N-th update.
``FEDLEARN_TEST_FAULT=nan:RANK:N``: worker RANK sends NaN weights as its N-th update.
``FEDLEARN_TEST_FAULT=short:RANK:N``: worker RANK sends one value too few as its N-th update.
Usage: python3 tests/dist_entry.py run_federated|run_async [flags...]
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedlearn import app, wire  # noqa: E402


def inject(fault: str) -> None:
    kind, rank, nth = fault.split(":")
    if int(os.environ.get("RANK", "-1")) != int(rank):
        return
    real_send = wire.send_update
    sent = 0

    def faulty_send(*args, **kwargs):
        nonlocal sent
        sent += 1
        if sent == int(nth):
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if kind in ("nan", "short"):
                weights = args[7]
                kwargs["weights"] = weights * float("nan") if kind == "nan" else weights[:-1]
                args = args[:7]
        return real_send(*args, **kwargs)

    wire.send_update = faulty_send


if __name__ == "__main__":
    if os.environ.get("FEDLEARN_TEST_FAULT"):
        inject(os.environ["FEDLEARN_TEST_FAULT"])
    sys.exit(app.main(sys.argv[1], sys.argv[2:]))
