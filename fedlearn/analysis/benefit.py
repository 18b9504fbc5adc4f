"""Is federating worth it for each client? Every client's accuracy alone (the local-only baseline), with the global
model and personalized, paired seed by seed on the same clients and test sets.

For each federated group and seed, client ``i``'s gain is its accuracy with the global model (or its personalized
one) minus its accuracy alone, on its own test set. Per seed: the share of clients better off (gain > 0), the mean
and median gain, the worst client's gain; then each over the seeds, as the other tables.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from tabulate import tabulate

from ..core.training import CLIENT_TESTS_FACT
from ..errors import UsageError
from .groups import Group, show_figure, show_gap
from .stats import summarize


def is_local_only(doc: dict[str, Any]) -> bool:
    """Whether ``doc`` is a local-only baseline run (each client alone)."""
    return doc["script"] == "run_baseline" and bool(doc["args"].get("local_only"))


def per_client(doc: dict[str, Any], key: str = "client_accuracy") -> list[float | None] | None:
    """Every client's final accuracy under ``key`` (None when the run has none)."""
    figures = doc["final"].get(key)
    return None if not figures else figures["per_client"]


def gains(ours: Sequence[float | None], alone: Sequence[float | None]) -> list[float]:
    """Each client's gain over its accuracy alone (clients without a test set left out)."""
    return [a - b for a, b in zip(ours, alone) if a is not None and b is not None]


FIGURES: tuple[tuple[str, Callable[[list[float]], float]], ...] = (
    ("clients better off (%)", lambda g: sum(x > 0 for x in g) / len(g)),
    ("mean gain (points)", statistics.fmean),
    ("median gain (points)", statistics.median),
    ("worst client's gain (points)", min),
)


def paired_docs(group: Group, local: Group) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The group's runs with the local-only run of the same seed; UsageError when their clients differ."""
    alone = {doc["args"].get("seed"): doc for doc in local.docs}
    pairs = []
    for name, doc in zip(group.names, group.docs):
        base = alone.get(doc["args"].get("seed"))
        if base is None:
            continue
        ours, theirs = doc.get("run", {}).get(CLIENT_TESTS_FACT), base.get("run", {}).get(CLIENT_TESTS_FACT)
        if ours is None or ours != theirs:
            seed = doc["args"].get("seed")
            raise UsageError(f"{name}: its clients' test sets are not those of the local-only run of seed {seed}; "
                             "the benefit table pairs runs of the same clients")  # fmt: skip
        pairs.append((doc, base))
    return pairs


def benefit_cells(group: Group, local: Group, key: str) -> list[str]:
    """The group's figures over seeds for the clients' accuracies under ``key`` against each alone."""
    per_seed: list[list[float]] = []
    for doc, base in paired_docs(group, local):
        ours, alone = per_client(doc, key), per_client(base)
        if ours is not None and alone is not None:
            per_seed.append(gains(ours, alone))
    cells = []
    for name, figure in FIGURES:
        summary = summarize([figure(g) for g in per_seed if g])
        cells.append(show_figure(summary, 100) if name.startswith("clients") else show_gap(summary))
    return cells


def benefit_table(groups: list[Group], local: Group, label: Callable[[dict[str, Any]], str]) -> str:
    """One column per federated group (and its personalized models): what its clients gain over training alone."""
    columns: list[tuple[str, list[str]]] = []
    for group in groups:
        if group is local or group.docs[0]["script"] == "run_baseline":
            continue
        if per_client(group.docs[0]) is not None:
            columns.append((f"{group.name}: global", benefit_cells(group, local, "client_accuracy")))
        if per_client(group.docs[0], "personal_client_accuracy") is not None:
            personal = group.docs[0]["args"].get("personalize")
            columns.append((f"{group.name}: {personal}", benefit_cells(group, local, "personal_client_accuracy")))
    rows = [[name, *[cells[i] for _, cells in columns]] for i, (name, _) in enumerate(FIGURES)]
    title = f"Benefit over training alone ({local.name}, seeds {', '.join(map(str, local.seeds))})"
    note = "gain: a client's accuracy on its own test set minus its accuracy alone; per seed, then over the seeds"
    table = tabulate(rows, headers=["", *[name for name, _ in columns]], tablefmt="github", disable_numparse=True)
    return f"{title}\n{table}\n{note}"


def benefit_tables(groups: list[Group], label: Callable[[dict[str, Any]], str], clients: bool = False) -> list[str]:
    """With a local-only group and a federated one with per-client figures: the benefit table (``clients``: and
    every client's figures, seed by seed); else nothing."""
    local = next((g for g in groups if is_local_only(g.docs[0])), None)
    federated = [g for g in groups if g.docs[0]["script"] != "run_baseline" and per_client(g.docs[0]) is not None]
    if local is None or not federated:
        return []
    tables = [benefit_table(groups, local, label)]
    if clients:
        for group in federated:
            for doc, base in paired_docs(group, local):
                seed = doc["args"].get("seed")
                tables.append(f"{group.name}, seed {seed}: each client's accuracy on its own test set\n"
                              + client_rows(doc, base))  # fmt: skip
    return tables


def client_rows(doc: dict[str, Any], base: dict[str, Any]) -> str:
    """One seed's clients side by side: alone, with the global model, personalized (when the run has it)."""
    alone, ours = per_client(base) or [], per_client(doc) or []
    personal = per_client(doc, "personal_client_accuracy")
    rows = []
    for client, (a, g) in enumerate(zip(alone, ours)):
        p = personal[client] if personal is not None else None
        rows.append([client, _pct(a), _pct(g), _pct(p)])
    headers = ["client", "alone (%)", "global (%)", "personalized (%)"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"
