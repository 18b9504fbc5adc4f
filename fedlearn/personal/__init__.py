"""Is federating worth it for each client? Personalized federated learning (``--personalize``: one entry each in
:data:`PERSONALIZATION`) and the local-only baseline (``run_baseline.py --local_only``, :data:`LOCAL_ONLY`).

Every personalized run and the local-only baseline evaluate each client on its own test set (``--client_test_frac``
or the data's own client test samples): the history's ``personal_client_accuracy`` beside the global model's
``client_accuracy``; :mod:`fedlearn.analysis.benefit` pairs them per client.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..comm.codecs import withheld_layers_problem
from ..core.flat import flat_parameters
from ..data import dataset_info
from ..data.partitions import natural
from ..errors import UsageError
from ..registry import FEDERATED_SCRIPTS, Entry, Flag, Flags, FlagSet, Range, Registry, require
from .strategies import Ditto, FedPer, FineTune, Personal

KEEPS_STATE = ("fedper", "ditto")


def has_client_tests(flags: Flags) -> bool:
    """Whether every client has its own test set: held out (``--client_test_frac``), or the data's own."""
    if flags.client_test_frac > 0:
        return True
    return natural(flags) and dataset_info(flags.dataset).client_tests


def _check_personal(flags: Flags, script: str) -> None:
    name = flags.personalize
    if name == "none":
        return
    require(script != "run_baseline", f"--personalize {name}: run_baseline trains one model for everybody; "
            "--local_only trains each client alone, run_federated.py personalizes")  # fmt: skip
    require(has_client_tests(flags), f"--personalize {name}: each client is evaluated on its own test set; give "
            "--client_test_frac F (or data whose clients have their own test samples)")  # fmt: skip
    if name in KEEPS_STATE:
        require(flags.workers == 1 and not flags.distributed, f"--personalize {name} keeps each client's personal "
                "model where it trains, and the server evaluates them: run it simulated with --workers 1")  # fmt: skip
        require(flags.drift_correction == "none", f"--personalize {name} with --drift_correction "
                f"{flags.drift_correction}: two kinds of per-client state; run them apart")  # fmt: skip


def _check_fedper(flags: Flags, script: str) -> None:
    require(script != "run_async", "--personalize fedper: the personal layers are kept out of synchronous rounds' "
            "averages; run_async.py personalizes with finetune or ditto")  # fmt: skip
    problem = withheld_layers_problem(flags.compress)
    require(problem is None, problem or "")


def personal_index(model: nn.Module, layers: str) -> torch.Tensor:
    """The entries of the flat weights that belong to the named modules (``last``: the last module holding
    parameters; else comma-separated module names such as ``fc2`` or ``out``)."""
    names = [name for name, _ in model.named_parameters()]
    owners = [name.rsplit(".", 1)[0] if "." in name else "" for name in names]
    wanted = [owners[-1]] if layers == "last" else [w.strip() for w in layers.split(",") if w.strip()]
    modules = sorted(set(owners), key=owners.index)
    for name in wanted:
        if not any(owner == name or owner.startswith(name + ".") for owner in owners):
            raise UsageError(f"--personal_layers: the model has no module {name!r} with parameters (it has "
                             f"{', '.join(modules)})")  # fmt: skip
    chosen = [any(o == w or o.startswith(w + ".") for w in wanted) for o in owners]
    sizes = [p.numel() for p in flat_parameters(model)]
    require(not all(chosen), f"--personal_layers {layers}: that is every layer; nothing would be shared")
    offsets = torch.tensor([0, *sizes]).cumsum(0)
    return torch.cat([torch.arange(int(offsets[i]), int(offsets[i + 1])) for i, c in enumerate(chosen) if c])


def _finetune(flags: Any, model: nn.Module, initial: torch.Tensor) -> Personal:
    return FineTune(flags["finetune_epochs"])


def _fedper(flags: Any, model: nn.Module, initial: torch.Tensor) -> Personal:
    return FedPer(index=personal_index(model, flags["personal_layers"]))


def _ditto(flags: Any, model: nn.Module, initial: torch.Tensor) -> Personal:
    return Ditto(lam=flags["ditto_lambda"], initial=initial.detach().float().cpu().clone())


def build_personal(flags: Any, model: nn.Module, initial: torch.Tensor) -> Personal | None:
    """The run's personalization (None: none), for a model of the run's kind starting from ``initial``."""
    build = PERSONALIZATION[flags["personalize"]].part
    return None if build is None else build(flags, model, initial)


def describe_personal(personal: Personal, dim: int, clients: int) -> str:
    """What the personalization does and keeps, for the Hyperparameters table."""
    if isinstance(personal, FineTune):
        return f"finetune: {personal.epochs} epoch(s) on each client's data before each evaluation; nothing kept"
    size, what = (personal.withheld, "personal layers") if isinstance(personal, FedPer) else (dim, "personal model")
    kept = f"up to {clients} x {size:,} float32 ({clients * size * 4 / 2**20:.1f} MiB), where the clients train"
    if isinstance(personal, FedPer):
        return f"fedper: {size:,} of {dim:,} weights stay on each client ({what}); {kept}"
    return f"ditto (lambda {personal.lam:g}): a {what} per client that has trained; {kept}"


def _personal_flag(name: str, default: Any, kind: Any, help: str, **options: Any) -> Flag:
    return Flag(name, default, kind, group="personal", federated=True, older=default, help=help, **options)


PERSONALIZATION = Registry.of(
    "personalization",
    _personal_flag("personalize", "none", str, "each client's own model besides the global one, evaluated on its "
                   "own test set: finetune, fedper, ditto (federated scripts; fedper run_federated only)"),
    [
        Entry("none", None, "the global model alone"),
        Entry("finetune", _finetune, "fine-tune the global model on each client's data before evaluating it",
              flags=(_personal_flag("finetune_epochs", 1, int, "epochs each client fine-tunes the global model "
                                    "(--personalize finetune)", count=True),)),
        Entry("fedper", _fedper, "FedPer: the personal layers never leave the client", check=_check_fedper,
              flags=(_personal_flag("personal_layers", "last", str, "modules kept by each client (--personalize "
                                    "fedper): last, or comma-separated names such as fc2"),)),
        Entry("ditto", _ditto, "Ditto: a personal model per client, pulled toward the global one",
              flags=(_personal_flag("ditto_lambda", 1.0, float, "Ditto's lambda: the pull of each personal model "
                                    "toward the global one (--personalize ditto)", valid=Range(0, 1e6)),)),
    ],
    check=_check_personal,
    off="none",
)  # fmt: skip
"""Every personalization by name (``--personalize``)."""


def _check_local_only(flags: Flags, script: str) -> None:
    if flags.local_only and script == "run_baseline":
        require(has_client_tests(flags), "--local_only: each client's model is evaluated on that client's own test "
                "set; give --client_test_frac F (or data whose clients have their own test samples)")  # fmt: skip


LOCAL_ONLY = FlagSet(
    "local-only baseline",
    (Flag("local_only", False, group="personal", unused_by=FEDERATED_SCRIPTS, older=False,
          help="run_baseline: train one model per client on its own training part alone (--epoch epochs), each "
               "evaluated on its own test set"),),
    check=_check_local_only,
    active=lambda flags, script: bool(flags.local_only),
)  # fmt: skip
"""The local-only baseline's switch."""

__all__ = [
    "LOCAL_ONLY",
    "PERSONALIZATION",
    "Personal",
    "build_personal",
    "describe_personal",
    "has_client_tests",
    "personal_index",
]
