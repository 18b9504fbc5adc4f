"""Test-only entry point for distributed runs: the real scripts, with a fault injected into one worker rank.

``FEDLEARN_TEST_FAULT=KIND:RANK:N[:VALUE]`` (RANK or N may be ``*``: every rank, every time):
- ``kill``: worker RANK kills itself (SIGKILL) instead of sending its N-th update;
- ``nan`` / ``short``: its N-th update holds NaN weights / one value too few;
- ``claim``: its N-th update claims VALUE samples trained;
- ``replay``: it sends its N-th update twice;
- ``flood``: after its N-th update it sends VALUE well-framed updates for jobs it was never given;
- ``count``: every sent update's payload size in bytes is appended to the file ``VALUE.RANK`` (then sent);
- ``forge``: on its N-th task, before training, it sends updates for the clients VALUE (comma-separated,
  hosted by another worker) under that task's key and version, as if it were their worker.
Usage: python3 tests/dist_entry.py run_federated|run_async [flags...]
"""

import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedlearn import app  # noqa: E402
from fedlearn.distributed import wire  # noqa: E402


def hits(spec: str, count: int) -> bool:
    return spec == "*" or count == int(spec)


def inject(fault: str) -> None:
    kind, rank, nth, *value = fault.split(":")
    if rank != "*" and int(os.environ.get("RANK", "-1")) != int(rank):
        return
    value = value[0] if value else ""
    real_send, real_recv = wire.send_update, wire.recv_task
    sent = received = 0

    def faulty_send(frame, dst=0):
        nonlocal sent
        sent += 1
        if not hits(nth, sent):
            return real_send(frame, dst)
        if kind == "count":
            with open(f"{value}.{os.environ['RANK']}", "a") as log:
                log.write(f"{frame.payload.numel() * frame.payload.element_size()}\n")
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind in ("nan", "short"):
            weights = frame.payload * float("nan") if kind == "nan" else frame.payload[:-1]
            frame = replace(frame, payload=weights)
        if kind == "claim":
            frame = replace(frame, samples_trained=int(value))
        real_send(frame, dst)
        if kind == "replay":
            real_send(frame, dst)
        if kind == "flood":
            for i in range(int(value)):
                real_send(replace(frame, job_key=frame.job_key + 1000 + i), dst)

    def faulty_recv(dim, src=0):
        nonlocal received
        task = real_recv(dim, src)
        if task.kind == wire.TRAIN:
            received += 1
            if kind == "forge" and hits(nth, received):
                for client in (int(c) for c in value.split(",")):
                    real_send(wire.WireUpdate(0, client, task.job_key, task.version, 80, 80, 4, 0.5, task.weights * 0))
        return task

    wire.send_update, wire.recv_task = faulty_send, faulty_recv


if __name__ == "__main__":
    if os.environ.get("FEDLEARN_TEST_FAULT"):
        inject(os.environ["FEDLEARN_TEST_FAULT"])
    sys.exit(app.main(sys.argv[1], sys.argv[2:]))
