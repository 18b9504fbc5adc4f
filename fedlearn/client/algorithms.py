"""Local algorithms chosen by ``--drift_correction``: what a client's job optimizes, what it keeps between jobs,
and what the server does first with its update (:data:`LOCAL_ALGORITHMS`, one entry each).

``none`` is plain local training, or FedProx's proximal term with ``--prox_mu``; ``scaffold`` is SCAFFOLD
(Karimireddy et al. 2020, option II): corrected gradients, a control variate per client, the server's control
variate; ``fednova`` is FedNova (Wang et al. 2020): plain local training, normalized averaging on the server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.client_state import refuse_outside_checkpoints
from ..core.training import momentum_of
from ..registry import FEDERATED_SCRIPTS, Entry, Flag, Flags, Range, Registry, require
from ..server.fednova import FedNova
from . import objectives
from .objectives import Objective


@dataclass(frozen=True)
class LocalAlgorithm:
    """A local algorithm's parts: ``objective(config)`` builds the job's objective once per trainer from the
    job configuration (:class:`fedlearn.client.LocalJobConfig`; its ``flags`` hold a plug-in's own);
    ``normalize(local_steps, momentum)`` the server's part before its checks (None: none);
    ``sends_control``: jobs take the server's control variate and return its change; ``client_state``: the
    checkpoint key of the per-client vectors it keeps between jobs (None: it keeps nothing), ``state_name`` what
    one is called in messages."""

    objective: Callable[[Any], Objective]
    normalize: Callable[[Callable[[int, int], int], float], Callable[..., Any]] | None = None
    sends_control: bool = False
    client_state: str | None = None
    state_name: str = "state"


def _plain_or_proximal(config: Any) -> Objective:
    return objectives.Proximal(config.prox_mu) if config.prox_mu > 0 else objectives.Plain()


def _sgd_rounds(flags: Flags, script: str) -> None:
    """SCAFFOLD and FedNova: synchronous rounds, SGD local training, not with FedProx."""
    name = flags.drift_correction
    require(script != "run_async", f"--drift_correction {name}: synchronous rounds only (run_federated.py)")
    require(
        momentum_of(flags.optimizer) is not None,
        f"--drift_correction {name} is defined for SGD local training: use --optimizer sgd or sgd-momentum, "
        f"not {flags.optimizer}",
    )
    require(flags.prox_mu == 0, f"--drift_correction {name} with --prox_mu: two corrections of client drift; pick one")


def _keeps_state(flags: Flags, script: str) -> None:
    """An algorithm that keeps state per client between jobs needs that state where checkpoints reach it."""
    algorithm = LOCAL_ALGORITHMS[flags.drift_correction].part
    if algorithm.client_state is not None:
        refuse_outside_checkpoints(flags, f"--drift_correction {flags.drift_correction}", algorithm.state_name)


def _scaffold_check(flags: Flags, script: str) -> None:
    """SCAFFOLD: as FedNova, and its control variates travel unguarded and uncompressed."""
    _sgd_rounds(flags, script)
    require(
        flags.byzantine == 0 and flags.gar == "mean",
        "--drift_correction scaffold averages the clients' control variates unguarded, so a robust --gar or "
        "--byzantine clients would protect the model but not the correction every client applies; use --gar mean",
    )
    problem = compressed_control_problem(flags.compress)
    require(problem is None, problem or "")


def compressed_control_problem(codec: str) -> str | None:
    """Why SCAFFOLD cannot go with ``codec`` (None: it can); the flag check and the local trainer both ask."""
    if codec == "none":
        return None
    return (f"--compress {codec} with --drift_correction scaffold: the control variates' changes would go "
            "uncompressed beside the delta; run SCAFFOLD without --compress")  # fmt: skip


LOCAL_ALGORITHMS = Registry.of(
    "local algorithms",
    Flag("drift_correction", "none", str, group="federation", federated=True, older="none",
         help="scaffold: SCAFFOLD's control variates (Karimireddy et al. 2020, option II); fednova: FedNova's "
              "normalized averaging (Wang et al. 2020); both for --optimizer sgd or sgd-momentum, run_federated only"),
    [
        Entry("none", LocalAlgorithm(_plain_or_proximal), "plain local training (FedProx with --prox_mu)"),
        Entry("scaffold", LocalAlgorithm(lambda config: objectives.Scaffold(config.lr), sends_control=True,
                                         client_state=objectives.STATE_KEY, state_name="control variate"),
              "SCAFFOLD", check=_scaffold_check),
        Entry("fednova", LocalAlgorithm(_plain_or_proximal, normalize=FedNova), "FedNova", check=_sgd_rounds),
    ],
    flags=(Flag("prox_mu", 0.0, float, group="federation", federated=True, valid=Range(0, 1e4),
                help="FedProx: add mu/2 * ||w - w_global||^2 to every local objective (0 = plain local training)"),),
    check=_keeps_state,
    off="none",
    scripts=FEDERATED_SCRIPTS,
)  # fmt: skip
"""Every local algorithm by name (``--drift_correction``): adding one is an objective (and, if it needs one, a
server part) and one entry here."""
