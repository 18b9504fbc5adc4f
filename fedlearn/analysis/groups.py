"""Runs that differ only in ``--seed``, taken together: their figures over the seeds, and the cost of federation.

:func:`group_runs` puts runs with the same script, dataset and settings (all
flags but the seed and those that only say where files go or what is shown) in
one group. :func:`group_table` gives each group's mean, standard deviation and
95 % interval (:mod:`fedlearn.analysis.stats`); :func:`cost_table` sets every federated
group against the centralized baseline on the same data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from ..config.status import not_settings, with_older_values
from ..events.console import fixed
from .stats import Summary, summarize


@dataclass(frozen=True)
class Group:
    """Runs with the same settings, one per seed (``names``: the runs' names, in the order given)."""

    names: tuple[str, ...]
    docs: tuple[dict[str, Any], ...]

    @property
    def seeds(self) -> list[Any]:
        """The runs' seeds, in order."""
        return [doc["args"].get("seed") for doc in self.docs]

    @property
    def name(self) -> str:
        """The first run's name without its seed suffix (``federated_seed-0`` -> ``federated``)."""
        first = self.names[0]
        seed = str(self.docs[0]["args"].get("seed"))
        for suffix in (f"_seed-{seed}", f"-seed{seed}", f"_seed{seed}"):
            if first.endswith(suffix):
                return first[: -len(suffix)]
        return first

    def over_seeds(self, figure: Callable[[dict[str, Any]], float | None]) -> Summary:
        """``figure`` of every run, summarized over the seeds (None: never reached)."""
        return summarize([figure(doc) for doc in self.docs])


def settings_key(doc: dict[str, Any]) -> str:
    """What must agree for two runs to be the same experiment with another seed."""
    ignored = not_settings()
    args = {k: v for k, v in with_older_values(doc["args"]).items() if k not in ignored}
    return json.dumps([doc["script"], doc["dataset"], args], sort_keys=True, default=str)


def group_runs(names: list[str], docs: list[dict[str, Any]]) -> list[Group]:
    """Runs grouped by :func:`settings_key`, groups in the order of their first run; a run repeating a seed its
    group already has starts another group (two runs of one seed are not two samples)."""
    grouped: dict[tuple[str, int], list[int]] = {}
    for i, doc in enumerate(docs):
        key, copy = settings_key(doc), 0
        while any(docs[j]["args"].get("seed") == doc["args"].get("seed") for j in grouped.get((key, copy), [])):
            copy += 1
        grouped.setdefault((key, copy), []).append(i)
    return [Group(tuple(names[i] for i in idx), tuple(docs[i] for i in idx)) for idx in grouped.values()]


def show(summary: Summary, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std [low, high]`` (what the seeds give), plus ``never k/n`` when some run never got there."""
    if summary.mean is None:
        return f"never {summary.never}/{summary.n}" if summary.never else "-"
    return _spread(summary, scale, digits) + (f"; never {summary.never}/{summary.n}" if summary.never else "")


def show_figure(summary: Summary, scale: float = 1.0, digits: int = 2) -> str:
    """Like :func:`show` for a figure a run may not have at all (the baseline's simulated time): ``-`` then."""
    return "-" if summary.mean is None else _spread(summary, scale, digits)


def _spread(summary: Summary, scale: float, digits: int, signed: bool = False) -> str:
    """``mean ± std [low, high]`` scaled, or the mean alone for one value."""
    number = lambda value, plus="": fixed(value * scale, digits, plus)  # noqa: E731
    text = number(summary.mean, "+" if signed else "")
    if summary.std is not None:
        text += f" ± {number(summary.std)} [{number(summary.low)}, {number(summary.high)}]"
    return text


def _reached(key: str) -> Callable[[dict[str, Any]], float | None]:
    def figure(doc: dict[str, Any]) -> float | None:
        reached = doc["final"].get("time_to_target")
        return None if reached is None else reached.get(key)

    return figure


def _megabytes(key: str) -> Callable[[dict[str, Any]], float | None]:
    def figure(doc: dict[str, Any]) -> float | None:
        value = doc["final"].get(key)
        return None if value is None else value / 1e6

    return figure


def _reached_mb(doc: dict[str, Any]) -> float | None:
    """Megabytes uploaded by the time the target was first reached (None: never)."""
    value = _reached("bytes_up")(doc)
    return None if value is None else value / 1e6


def _central(group: Group) -> bool:
    """Whether the group is of baseline runs (no clients, no simulated clock)."""
    return group.docs[0]["script"] == "run_baseline"


def _clients(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda doc: (doc["final"].get("client_accuracy") or {}).get(key)


def seeds_cell(group: Group, every_seed: list[Any]) -> str:
    """The group's seeds, and those other groups ran that it lacks."""
    missing = [s for s in every_seed if s not in group.seeds]
    text = ", ".join(map(str, group.seeds))
    return text + (f" (missing: {', '.join(map(str, missing))})" if missing else "")


def group_table(groups: list[Group], label: Callable[[dict[str, Any]], str]) -> str:
    """One column per group: its seeds, then each figure as mean ± std [95 % interval] over them."""
    every_seed = sorted({s for g in groups for s in g.seeds}, key=str)
    targets = {g.docs[0]["final"].get("target_accuracy") for g in groups} - {None}
    rows: list[tuple[str, Callable[[Group], str]]] = [
        ("method", lambda g: label(g.docs[0])),
        ("seeds", lambda g: seeds_cell(g, every_seed)),
        ("test accuracy (%)", lambda g: show_figure(g.over_seeds(lambda d: d["final"]["test_accuracy"]), 100)),
        ("test loss", lambda g: show_figure(g.over_seeds(lambda d: d["final"]["test_loss"]), 1, 4)),
        ("best accuracy (%)", lambda g: show_figure(g.over_seeds(lambda d: d["final"].get("best_test_accuracy")), 100)),
        ("wall-clock (s)", lambda g: show_figure(g.over_seeds(lambda d: d["final"]["wall_time_s"]), 1, 1)),
        ("simulated time (s)", lambda g: show_figure(g.over_seeds(lambda d: d["final"].get("sim_time")), 1, 1)),
    ]
    if any(g.docs[0]["final"].get("bytes_up") is not None for g in groups):
        rows += [("uploaded (MB)", lambda g: show_figure(g.over_seeds(_megabytes("bytes_up")), 1, 3)),
                 ("downloaded (MB)", lambda g: show_figure(g.over_seeds(_megabytes("bytes_down")), 1, 3))]  # fmt: skip
    if any(g.docs[0]["final"].get("dp_epsilon") is not None for g in groups):
        rows.append(("privacy loss epsilon", lambda g: show_figure(g.over_seeds(lambda d: d["final"].get(
            "dp_epsilon")), 1, 2)))  # fmt: skip
    if targets:
        rows += [
            (
                "time to target: simulated (s)",
                lambda g: "-" if _central(g) else show(g.over_seeds(_reached("sim_time")), 1, 1),
            ),
            ("time to target: wall-clock (s)", lambda g: show(g.over_seeds(_reached("wall_time_s")), 1, 1)),
            ("uploaded to target (MB)", lambda g: "-" if _central(g) else show(g.over_seeds(_reached_mb), 1, 3)),
        ]
    if any(g.docs[0]["final"].get("client_accuracy") for g in groups):
        rows += [
            ("client accuracy: mean (%)", lambda g: show_figure(g.over_seeds(_clients("mean")), 100)),
            ("client accuracy: worst 10 % (%)", lambda g: show_figure(g.over_seeds(_clients("worst_10pct")), 100)),
        ]
    table = [[name, *[cell(g) for g in groups]] for name, cell in rows]
    title = "Over seeds: mean ± standard deviation [95 % interval, Student's t]"
    return title + "\n" + tabulate(table, headers=["group", *[g.name for g in groups]], tablefmt="github",
                                   disable_numparse=True)  # fmt: skip


def paired_gap(run: Group, base: Group, figure: Callable[[dict[str, Any]], float | None]) -> Summary:
    """``figure`` of ``run`` minus the baseline's, seed by seed over the seeds both ran (same seed, same data);
    the difference of the means when no seed is shared."""
    base_by_seed = {doc["args"].get("seed"): figure(doc) for doc in base.docs}
    pairs = [(figure(doc), base_by_seed.get(doc["args"].get("seed"), ...)) for doc in run.docs]
    gaps = [a - b for a, b in pairs if b is not ... and a is not None and b is not None]
    if gaps:
        return summarize(gaps)
    ours, theirs = run.over_seeds(figure), base.over_seeds(figure)
    if ours.mean is None or theirs.mean is None:
        return Summary(0, None, None, None, None)
    return Summary(1, ours.mean - theirs.mean, None, None, None)


def ratio_to(base: Group, figure: Callable[[dict[str, Any]], float | None]) -> Callable[[Group], str]:
    """A cell: the group's ``figure`` over the baseline's mean (never counted)."""
    reference = base.over_seeds(figure).mean

    def cell(group: Group) -> str:
        if not reference:
            return "-"
        return show(summarize([None if (v := figure(doc)) is None else v / reference for doc in group.docs]))

    return cell


def cost_table(groups: list[Group], base: Group, label: Callable[[dict[str, Any]], str]) -> str:
    """What federation costs each federated group against the baseline ``base``: accuracy and worst-client gaps,
    samples and updates to reach the target, simulated time to it, and the partition's label skew."""
    federated = [g for g in groups if not _central(g)]
    accuracy = lambda d: d["final"]["test_accuracy"]  # noqa: E731
    rows: list[tuple[str, Callable[[Group], str]]] = [
        ("method", lambda g: label(g.docs[0])),
        ("seeds", lambda g: ", ".join(map(str, g.seeds))),
        ("accuracy gap (points)", lambda g: show_gap(paired_gap(g, base, accuracy))),
        ("worst-10 % client accuracy gap (points)",
         lambda g: show_gap(paired_gap(g, base, _clients("worst_10pct")))),
    ]  # fmt: skip
    if any(g.docs[0]["final"].get("target_accuracy") is not None for g in groups):  # else nothing to reach
        rows += [
            ("samples to target (× baseline)", ratio_to(base, _reached("samples_trained"))),
            ("client updates to target", lambda g: show(g.over_seeds(_reached("client_updates")), 1, 0)),
            ("simulated time to target (s)", lambda g: show(g.over_seeds(_reached("sim_time")), 1, 1)),
            ("uploaded to target (MB)", lambda g: show(g.over_seeds(_reached_mb), 1, 3)),
        ]
    skew = lambda d: (d.get("partition") or {}).get("label_skew_mean")  # noqa: E731
    rows.append(("label skew (mean TV distance)", lambda g: show_figure(g.over_seeds(skew), 1, 3)))
    table = [[name, *[cell(g) for g in federated]] for name, cell in rows]
    method = "" if base.name == label(base.docs[0]) else f"{label(base.docs[0])}, "
    title = f"Cost of federation against {base.name} ({method}seeds {', '.join(map(str, base.seeds))})"
    note = "gaps: federated minus baseline, seed by seed over the seeds both ran; never: runs that missed the target"
    headers = ["", *[g.name for g in federated]]
    return f"{title}\n{tabulate(table, headers=headers, tablefmt='github', disable_numparse=True)}\n{note}"


def show_gap(gap: Summary) -> str:
    """A gap in points, signed."""
    return "-" if gap.mean is None else _spread(gap, 100, 2, signed=True)
