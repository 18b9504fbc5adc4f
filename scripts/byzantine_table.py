"""Print the Byzantine table of docs/byzantine.md from the JSON files scripts/byzantine_experiment.sh wrote.

python3 scripts/byzantine_table.py [docs/byzantine]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tabulate import tabulate

RULES = ["mean", "median", "trimmed-mean", "krum", "bulyan"]
ATTACKS = [("none", "no attack"), ("signflip", "sign flip"), ("alie", "a little is enough")]
MODES = [("sync", "FedAvg"), ("async", "FedBuff")]


def load(folder: Path) -> dict[tuple[str, str, str], dict]:
    """(mode, rule, attack) -> the run's ``final`` block."""
    runs = {}
    for mode, _ in MODES:
        for path in sorted(folder.glob(f"{mode}*/*.json")):
            doc = json.loads(path.read_text())
            args = doc["args"]
            rule = args["gar"] if args["gar_f"] == args["byzantine"] else f"{args['gar']} (f={args['gar_f']})"
            runs[(mode, rule, args["attack"])] = doc["final"]
    return runs


def cell(final: dict | None) -> str:
    if final is None:
        return "-"
    text = f"{100 * final['test_accuracy']:.2f}"
    if "byzantine_selected" in final and final["byzantine_updates"]:
        text += f" ({final['byzantine_selected']}/{final['selected_updates']} Byz.)"
    return text


def main(folder: Path) -> None:
    runs = load(folder)
    rules = [r for r in RULES if any(k[1] == r for k in runs)]
    rules += sorted({k[1] for k in runs} - set(rules))
    headers = ["rule"] + [f"{title}: {label}" for _, title in MODES for _, label in ATTACKS]
    rows = [[rule] + [cell(runs.get((mode, rule, attack))) for mode, _ in MODES for attack, _ in ATTACKS]
            for rule in rules]  # fmt: skip
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/byzantine"))
