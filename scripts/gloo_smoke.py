"""Gloo smoke test for a torchrun launch: proves every rank can reach every other one.

Run under torchrun (it reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the environment), e.g.

    torchrun --nproc-per-node 2 scripts/gloo_smoke.py
    python3 scripts/two_host.py --nproc-a 1 --nproc-b 2 -- scripts/gloo_smoke.py --out /tmp/smoke_{host}.txt

Checks: an all_reduce over all ranks, then a send/recv round trip between rank 0 and the last rank
(crossing hosts in a two-host launch). Rank 0 prints "gloo smoke ok world=N" and, with --out PATH,
writes the same line plus timings to PATH. Exits non-zero (with the reason) when a check fails.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import sys
import time

import torch
import torch.distributed as dist


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="file that rank 0 writes the result line to")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per collective (default 60)")
    parser.add_argument("--numel", type=int, default=1024, help="elements in the exchanged tensors (default 1024)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=args.timeout))
    rank, world = dist.get_rank(), dist.get_world_size()
    t_init = time.perf_counter() - t0
    last = world - 1
    try:
        # all_reduce: every rank contributes rank+1, so each element must equal world*(world+1)/2.
        t1 = time.perf_counter()
        x = torch.full((args.numel,), float(rank + 1))
        dist.all_reduce(x)
        expected = world * (world + 1) / 2
        if not torch.all(x == expected):
            raise RuntimeError(f"all_reduce gave {x[0].item()} on rank {rank}, expected {expected}")
        t_allreduce = time.perf_counter() - t1

        # send/recv round trip between rank 0 and the last rank (skipped when world == 1).
        t2 = time.perf_counter()
        if world > 1:
            if rank == 0:
                dist.send(torch.arange(args.numel, dtype=torch.float32), dst=last)
                back = torch.empty(args.numel)
                dist.recv(back, src=last)
                if not torch.equal(back, torch.arange(args.numel, dtype=torch.float32) * 2):
                    raise RuntimeError("rank 0 got a wrong reply from the last rank")
            elif rank == last:
                buf = torch.empty(args.numel)
                dist.recv(buf, src=0)
                dist.send(buf * 2, dst=0)
        t_p2p = time.perf_counter() - t2
        dist.barrier()
    finally:
        dist.destroy_process_group()

    if rank == 0:
        line = f"gloo smoke ok world={world}"
        print(
            f"{line} (host={socket.gethostname()} master={os.environ.get('MASTER_ADDR')} "
            f"init={t_init:.3f}s all_reduce={t_allreduce:.3f}s send/recv={t_p2p:.3f}s)",
            flush=True,
        )
        if args.out:
            with open(args.out, "w") as f:
                f.write(f"{line}\ninit_s={t_init:.3f}\nall_reduce_s={t_allreduce:.3f}\nsend_recv_s={t_p2p:.3f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
