"""Peer benchmark: the same FedAvg workload run by fedlearn and by Flower's simulation (Ray), side by side.

Each run is a whole process (``subprocess.Popen``) timed from start to exit; a sampler thread sums the PSS (and
RSS) of every process in its tree every ``--interval`` seconds and keeps the peak. Repetitions are interleaved
(fedlearn, Flower, fedlearn, Flower, ...). Run from the repository root with the system python::

    python3 benchmarks/flower/compare.py            # peer-8 and peer-100, 1 and 2 workers, 3 repetitions

Flower's side runs with ``benchmarks/flower/.venv/bin/python`` (see README.md for its install).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV_PYTHON = HERE / ".venv" / "bin" / "python"
INSTALL = (
    "python3 -m venv --system-site-packages benchmarks/flower/.venv && "
    "benchmarks/flower/.venv/bin/pip install -r benchmarks/flower/requirements.txt"
)
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Workload:
    num_clients: int
    num_select: int
    rounds: int
    local_epochs: int = 1
    lr: float = 0.01
    batch_size: int = 100


WORKLOADS = {
    "peer-8": Workload(num_clients=8, num_select=4, rounds=5),
    "peer-100": Workload(num_clients=100, num_select=10, rounds=10),
}


# ---------------------------------------------------------------- process tree memory (/proc, no psutil)


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(ppid, starttime, comm) of ``pid`` from /proc/<pid>/stat; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    lparen, rparen = text.find("("), text.rfind(")")
    rest = text[rparen + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, starttime field 22.
    return int(rest[1]), int(rest[19]), text[lparen + 1 : rparen]


def _memory_kib(pid: int) -> tuple[int, int] | None:
    """(Pss, Rss) in KiB from /proc/<pid>/smaps_rollup; None when it is gone or unreadable (zombie)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    pss = rss = None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
        elif line.startswith("Rss:"):
            rss = int(line.split()[1])
    if pss is None or rss is None:
        return None
    return pss, rss


def _descendants(root: int) -> dict[int, tuple[int, str]]:
    """Every live process below ``root`` (not root itself): pid -> (starttime, comm), by ppid chains over /proc."""
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(int(entry))
        if st is None:
            continue
        ppid, start, comm = st
        children.setdefault(ppid, []).append(int(entry))
        info[int(entry)] = (start, comm)
    found: dict[int, tuple[int, str]] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid in found or pid not in info:
            continue
        found[pid] = info[pid]
        stack.extend(children.get(pid, []))
    return found


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] == start


def _become_subreaper() -> bool:
    """Orphans of the runs (Ray's processes outliving the driver) get reparented to us, not to init."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


class TreeSampler(threading.Thread):
    """Samples the summed PSS/RSS of all our descendants (the run's tree) until stopped; keeps the peaks."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.me = os.getpid()
        self.stop_event = threading.Event()
        self.seen: dict[int, tuple[int, str]] = {}  # pid -> (starttime, comm): every process of the run
        self.peak_pss_kib = 0
        self.peak_rss_kib = 0
        self.peak_procs = 0
        self.peak_breakdown: list[tuple[str, int, float]] = []
        self.samples = 0

    def sample(self) -> None:
        tree = _descendants(self.me)
        # A process we saw whose parent died before we became its subreaper's child would drop out of the
        # chain: keep counting every process we have seen while it lives (same pid and start time).
        for pid, (start, comm) in list(self.seen.items()):
            if pid not in tree and _alive(pid, start):
                tree[pid] = (start, comm)
        self.seen.update(tree)
        pss_sum = rss_sum = 0
        rows = []
        for pid, (_, comm) in tree.items():
            mem = _memory_kib(pid)
            if mem is None:
                continue
            pss_sum += mem[0]
            rss_sum += mem[1]
            rows.append((comm, pid, mem[0]))
        self.samples += 1
        self.peak_rss_kib = max(self.peak_rss_kib, rss_sum)
        self.peak_procs = max(self.peak_procs, len(rows))
        if pss_sum > self.peak_pss_kib:
            self.peak_pss_kib = pss_sum
            self.peak_breakdown = [(c, p, round(k / 1024, 1)) for c, p, k in sorted(rows, key=lambda r: -r[2])]

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


def _reap(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def cleanup(seen: dict[int, tuple[int, str]], skip: int, grace: float) -> tuple[int, int]:
    """Wait up to ``grace`` s for the run's leftover processes to exit, then SIGTERM, then SIGKILL them.

    Returns (leftovers at the driver's exit, processes we had to kill).
    """
    pids = [p for p in seen if p != skip]

    def alive() -> list[int]:
        _reap(pids)
        return [p for p in pids if _alive(p, seen[p][0])]

    left = alive()
    deadline = time.monotonic() + grace
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = 0
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
        victims = alive()
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, sig)
                killed += sig == signal.SIGTERM
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    still = alive()
    if still:
        print(f"compare: processes {still} survived SIGKILL", file=sys.stderr)
    return len(left), killed


# ---------------------------------------------------------------- one run


def fedlearn_command(w: Workload, workers: int, args: argparse.Namespace, save: Path) -> list[str]:
    cmd = [
        sys.executable,
        "run_federated.py",
        "--dataset",
        "fashion-mnist",
        "--data_dir",
        args.data_dir,
        "--no_download",
        "--device",
        "cpu",
        "--model",
        "cnn",
        "--num_clients",
        str(w.num_clients),
        "--num_select_clients",
        str(w.num_select),
        "--global_epoch",
        str(w.rounds),
        "--local_epoch",
        str(w.local_epochs),
        "--optimizer",
        "sgd",
        "--init_lr",
        str(w.lr),
        "--batch_size",
        str(w.batch_size),
        "--seed",
        str(args.seed),
        "--no_progress",
        "--save",
        str(save),
    ]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    return cmd + shlex.split(args.fedlearn_args)


def flower_command(w: Workload, workers: int, args: argparse.Namespace, cores: int) -> list[str]:
    cpus_per_client = cores / workers
    return [
        str(VENV_PYTHON),
        str((HERE / "flower_fedavg.py").relative_to(REPO)),
        "--num_clients",
        str(w.num_clients),
        "--num_select",
        str(w.num_select),
        "--rounds",
        str(w.rounds),
        "--batch_size",
        str(w.batch_size),
        "--lr",
        str(w.lr),
        "--data_dir",
        args.data_dir,
        "--seed",
        str(args.seed),
        "--num_cpus",
        str(cores),
        "--cpus_per_client",
        str(cpus_per_client),
    ]


FINAL_RE = re.compile(r"^FINAL accuracy=(\S+) loss=(\S+)\s*$", re.MULTILINE)


def run_one(cmd: list[str], log: Path, args: argparse.Namespace) -> dict:
    """Start ``cmd``, time it to its exit, sample its tree's memory, clean up what it leaves behind."""
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    sampler = TreeSampler(args.interval)
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
        sampler.start()
        timed_out = False
        try:
            proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            sampler.stop()
            cleanup(sampler.seen, proc.pid, 0.0)
            raise
        wall = time.perf_counter() - start
        sampler.stop()
    leftovers, killed = cleanup(sampler.seen, proc.pid, args.grace)
    return {
        "cmd": cmd,
        "rc": proc.returncode,
        "timed_out": timed_out,
        "wall_s": round(wall, 3),
        "peak_pss_mib": round(sampler.peak_pss_kib / 1024, 1),
        "peak_rss_mib": round(sampler.peak_rss_kib / 1024, 1),
        "peak_procs": sampler.peak_procs,
        "procs_seen": len(sampler.seen),
        "samples": sampler.samples,
        "peak_pss_breakdown": [{"comm": c, "pid": p, "pss_mib": m} for c, p, m in sampler.peak_breakdown[:12]],
        "leftover_procs_at_exit": leftovers,
        "killed_procs": killed,
    }


def parse_result(system: str, log: Path, save: Path) -> tuple[float | None, float | None]:
    """Final test accuracy and loss: fedlearn's results JSON (``final``), Flower's ``FINAL`` line."""
    try:
        if system == "fedlearn":
            final = json.loads(save.read_text())["final"]
            return float(final["test_accuracy"]), float(final["test_loss"])
        matches = FINAL_RE.findall(log.read_text(errors="replace"))
        if matches:
            return float(matches[-1][0]), float(matches[-1][1])
    except (OSError, ValueError, KeyError):
        pass
    return None, None


# ---------------------------------------------------------------- versions, table


def flower_versions() -> dict:
    code = (
        "import json, sys, flwr, ray, torch; "
        "print(json.dumps({'python': sys.version.split()[0], 'flwr': flwr.__version__, 'ray': ray.__version__, "
        "'torch': torch.__version__}))"
    )
    out = subprocess.run([str(VENV_PYTHON), "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"rc {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summarize(runs: list[dict]) -> list[dict]:
    groups: dict[tuple[str, int, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["workload"], r["workers"], r["system"]), []).append(r)
    rows = []
    for (workload, workers, system), rs in groups.items():
        ok = [r for r in rs if r["rc"] == 0 and not r["timed_out"]]
        walls = [r["wall_s"] for r in ok]
        accs = [r["accuracy"] for r in ok if r["accuracy"] is not None]
        rows.append(
            {
                "workload": workload,
                "workers": workers,
                "system": system,
                "runs_ok": len(ok),
                "runs": len(rs),
                "wall_s_median": _median(walls),
                "wall_s_min": min(walls) if walls else None,
                "wall_s_max": max(walls) if walls else None,
                "peak_pss_mib_median": _median([r["peak_pss_mib"] for r in ok]),
                "peak_rss_mib_median": _median([r["peak_rss_mib"] for r in ok]),
                "peak_procs": max((r["peak_procs"] for r in ok), default=None),
                "accuracy_median": _median(accs),
            }
        )
    return rows


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def table(rows: list[dict]) -> str:
    from tabulate import tabulate

    out = []
    by_key = {(r["workload"], r["workers"], r["system"]): r for r in rows}
    for workload, workers in dict.fromkeys((r["workload"], r["workers"]) for r in rows):
        for system in ("fedlearn", "flower"):
            r = by_key.get((workload, workers, system))
            if r is None:
                continue
            spread = f"{_f(r['wall_s_min'], '.1f')}-{_f(r['wall_s_max'], '.1f')}"
            out.append(
                [
                    workload,
                    workers,
                    system,
                    f"{r['runs_ok']}/{r['runs']}",
                    _f(r["wall_s_median"], ".1f"),
                    spread,
                    _f(r["peak_pss_mib_median"], ".0f"),
                    _f(r["peak_rss_mib_median"], ".0f"),
                    r["peak_procs"] if r["peak_procs"] is not None else "-",
                    _f(r["accuracy_median"], ".4f"),
                ]
            )
        a, b = by_key.get((workload, workers, "fedlearn")), by_key.get((workload, workers, "flower"))
        if a and b:

            def ratio(key: str, a: dict = a, b: dict = b) -> str:
                return f"{a[key] / b[key]:.2f}x" if a[key] and b[key] else "-"

            out.append(
                [
                    workload,
                    workers,
                    "fedlearn/flower",
                    "",
                    ratio("wall_s_median"),
                    "",
                    ratio("peak_pss_mib_median"),
                    ratio("peak_rss_mib_median"),
                    "",
                    "",
                ]
            )
    headers = [
        "workload",
        "workers",
        "system",
        "ok",
        "wall s (median)",
        "wall s (min-max)",
        "peak PSS MiB",
        "peak RSS MiB",
        "procs",
        "test acc",
    ]
    return tabulate(out, headers=headers, tablefmt="github")


# ---------------------------------------------------------------- main


def metadata(args: argparse.Namespace, cores: int, fl_versions: dict, subreaper: bool, logdir: Path) -> dict:
    import torch

    sys.path.insert(0, str(REPO))
    import fedlearn

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "quick": args.quick,
        "git_commit": commit or None,
        "cpu_count": cores,
        "affinity": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "fedlearn_side": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "fedlearn": getattr(fedlearn, "__version__", None),
        },
        "flower_side": fl_versions,
        "interval_s": args.interval,
        "subreaper": subreaper,
        "logs": str(logdir),
        "workloads": {n: WORKLOADS[n].__dict__ for n in args.workloads},
        "rounds_override": args.rounds,
        "reps": args.reps,
        "fedlearn_args": args.fedlearn_args,
    }


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as ex:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from ex
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _workload_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"workloads: choose from {', '.join(WORKLOADS)} (got {text!r})")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="fedlearn against Flower's simulation on the same FedAvg workloads: whole-process wall time "
        "and peak PSS of the process tree, repetitions interleaved.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--workloads", type=_workload_list, default="peer-8,peer-100", help="from: " + ", ".join(WORKLOADS))
    p.add_argument(
        "--workers",
        type=_int_list,
        default="1,2",
        help="settings: W fedlearn workers against W Flower actors (num_cpus per client = cores / W)",
    )
    p.add_argument("--reps", type=int, default=3, help="repetitions of each (workload, workers, system)")
    p.add_argument("--rounds", type=int, default=None, help="override every workload's rounds")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round, 1 repetition (not a result)")
    p.add_argument("--data_dir", default="./data")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--out",
        default=None,
        help="results JSON (default: benchmarks/flower/results.json; with --quick, next to the logs in a temp folder)",
    )
    p.add_argument("--interval", type=float, default=0.15, help="seconds between memory samples")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds one run may take")
    p.add_argument("--grace", type=float, default=5.0, help="seconds leftovers may take to exit before being killed")
    p.add_argument("--fedlearn_args", default="", help="extra flags for run_federated.py (e.g. --no_channels_last)")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.rounds = 1, 1
    if args.reps < 1 or (args.rounds is not None and args.rounds < 1):
        p.error("--reps and --rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not VENV_PYTHON.exists():
        print(f"compare: Flower's venv is missing ({VENV_PYTHON}); install it: {INSTALL}", file=sys.stderr)
        return 2
    fl_versions = flower_versions()
    if "error" in fl_versions:
        print(
            f"compare: the venv cannot import flwr/ray/torch ({fl_versions['error']}); install: {INSTALL}",
            file=sys.stderr,
        )
        return 2
    cores = os.cpu_count() or 1
    subreaper = _become_subreaper()
    logdir = Path(tempfile.mkdtemp(prefix="flower-compare-"))
    plan = [
        (name, workers, rep, system)
        for name in args.workloads
        for workers in args.workers
        for rep in range(args.reps)
        for system in ("fedlearn", "flower")
    ]
    runs = []
    for i, (name, workers, rep, system) in enumerate(plan, 1):
        w = WORKLOADS[name]
        if args.rounds is not None:
            w = Workload(w.num_clients, w.num_select, args.rounds, w.local_epochs, w.lr, w.batch_size)
        stem = f"{name}-w{workers}-{system}-r{rep}"
        log, save = logdir / f"{stem}.log", logdir / f"{stem}.json"
        if system == "fedlearn":
            cmd = fedlearn_command(w, workers, args, save)
        else:
            cmd = flower_command(w, workers, args, cores)
        r = run_one(cmd, log, args)
        r["accuracy"], r["loss"] = parse_result(system, log, save)
        r.update(workload=name, workers=workers, system=system, rep=rep, rounds=w.rounds, log=str(log))
        if r["rc"] != 0 or r["timed_out"]:
            lines = log.read_text(errors="replace").splitlines()
            r["log_tail"] = lines[-30:]
        runs.append(r)
        status = "ok" if r["rc"] == 0 and not r["timed_out"] else f"FAILED rc={r['rc']} (log {log})"
        print(
            f"[{i}/{len(plan)}] {name} workers={workers} {system} rep {rep + 1}: {r['wall_s']:.1f} s, "
            f"peak PSS {r['peak_pss_mib']:.0f} MiB (RSS {r['peak_rss_mib']:.0f}, {r['peak_procs']} procs), "
            f"acc {_f(r['accuracy'], '.4f')}, leftovers {r['leftover_procs_at_exit']} killed {r['killed_procs']} "
            f"- {status}",
            file=sys.stderr,
            flush=True,
        )
    rows = summarize(runs)
    print(table(rows))
    if args.quick:
        print("(--quick: a smoke test, 1 round and 1 repetition: these figures are not results)")
    result = {
        "meta": metadata(args, cores, fl_versions, subreaper, logdir),
        "summary": rows,
        "runs": runs,
    }
    out = Path(args.out) if args.out else (logdir / "results.json" if args.quick else HERE / "results.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results written to {out} (logs in {logdir})")
    return 0 if all(r["rc"] == 0 and not r["timed_out"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
