"""Two-host tests: scripts/two_host.py runs a torchrun job on two network-namespace "hosts" joined by an
emulated WAN link with delay and loss: netem on a veth pair where the kernel has sch_netem, otherwise
a user-space TUN relay (scripts/netem_relay.py). Needs root, iproute2, network namespaces and either
sch_netem or /dev/net/tun; otherwise the harness exits 77 and the tests are skipped with its reason.

Other tests reuse ``run_two_host`` (pytest puts tests/ on sys.path, as for conftest):

    from test_two_host import run_two_host

    def test_federated_over_two_hosts(tmp_path):
        proc = run_two_host(["run_federated.py", "--distributed", ...], nproc_a=1, nproc_b=2, timeout=120)
        assert proc.returncode == 0, proc.stdout[-4000:]

TWO_HOST_LINK=netem|relay|auto in the environment picks the link emulation (default auto).
Run just these:  pytest tests/test_two_host.py
"""

from __future__ import annotations

import importlib.util
import os
import signal
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from conftest import REPO

SKIP = 77
HARNESS = REPO / "scripts" / "two_host.py"

pytestmark = pytest.mark.slow  # every test here starts processes


def run_two_host(
    script_and_args: Sequence[str],
    *,
    nproc_a: int = 1,
    nproc_b: int = 2,
    delay_ms: float = 20.0,
    loss: float = 1.0,
    link: str | None = None,
    seed: int = 0,
    timeout: float = 45.0,
    harness_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | Path = REPO,
) -> subprocess.CompletedProcess:
    """Run ``two_host.py [options] -- SCRIPT ARGS...`` and return its result (stdout has both hosts'
    output, prefixed [a]/[b], and the summary line last). Skips the calling test when the harness
    exits 77 (this machine cannot build the link).

    The script path is relative to ``cwd`` (the repository root by default), where the hosts also run;
    the hosts get this process's environment plus ``env``, with the repository root put first on
    PYTHONPATH so that a script anywhere can import the project. ``timeout`` bounds the job inside
    the harness; should the harness itself hang, it gets SIGTERM (it then cleans up) 30 s later.
    """
    cmd = [
        sys.executable, str(HARNESS),
        "--nproc-a", str(nproc_a), "--nproc-b", str(nproc_b),
        "--delay-ms", f"{delay_ms:g}", "--loss", f"{loss:g}",
        "--link", link or os.environ.get("TWO_HOST_LINK", "auto"),
        "--seed", str(seed), "--timeout", f"{timeout:g}",
        *harness_args, "--", *script_and_args,
    ]  # fmt: skip
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the harness kills its hosts and removes the namespaces
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        pytest.fail(f"two_host.py hung past its own --timeout {timeout:g}s\n{stdout[-4000:]}\n{stderr[-2000:]}")
    result = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if result.returncode == SKIP:
        lines = result.stdout.strip().splitlines()
        pytest.skip(lines[-1] if lines else "two-host harness exited 77")
    return result


def load_harness():
    """scripts/two_host.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("two_host", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_host_gloo_smoke_over_emulated_link(tmp_path):
    out = tmp_path / "smoke_{host}.txt"  # only host A (global rank 0) writes it
    proc = run_two_host(
        ["scripts/gloo_smoke.py", "--out", str(out), "--timeout", "30"], nproc_a=1, nproc_b=2, delay_ms=20, loss=1
    )
    assert proc.returncode == 0, f"harness exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    lines = proc.stdout.splitlines()
    emulation = [line for line in lines if line.startswith("two-host: link emulation: ")]
    assert len(emulation) == 1 and "delay 20ms loss 1%" in emulation[0], emulation
    assert any(line.startswith("[a] gloo smoke ok world=3") for line in lines), proc.stdout[-4000:]
    summary = lines[-1]
    assert summary.startswith("two-host summary: ok; link "), summary
    assert ("netem (" in summary) or ("relay (" in summary), summary
    written = tmp_path / "smoke_a.txt"
    assert written.read_text().splitlines()[0] == "gloo smoke ok world=3"
    assert not (tmp_path / "smoke_b.txt").exists()


UDP_RECEIVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
s.settimeout(5.0)
got = []
try:
    while True:
        data = s.recv(64)
        s.settimeout(1.0)
        seq, sent = data.split(b" ")
        got.append((int(seq), time.monotonic() - float(sent)))
except socket.timeout:
    pass
print(" ".join(f"{seq}:{lat:.4f}" for seq, lat in got))
"""

UDP_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for seq in range(int(sys.argv[3])):
    s.sendto(f"{seq} {time.monotonic():.6f}".encode(), (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.002)
"""


def test_tun_relay_delays_and_drops_reproducibly():
    """The relay on its own (no torch): UDP datagrams from host B to host A arrive after the delay, in
    order, and exactly the datagrams that the seeded loss generator keeps arrive."""
    th = load_harness()
    delay_ms, loss, seed, count, port = 30.0, 10.0, 7, 300, 29411
    link = th.TwoHostLink(f"t{os.getpid()}", delay_ms, loss, mode="relay", seed=seed)
    try:
        try:
            th.preflight()
            link.up()
        except th.Skipped as exc:
            pytest.skip(f"two-host test skipped: {exc}")
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", link.ns_a, sys.executable, "-c", UDP_RECEIVER, th.ADDR_A, str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert receiver.stdout.readline().strip() == "ready"
        subprocess.run(
            ["ip", "netns", "exec", link.ns_b, sys.executable, "-c", UDP_SENDER, th.ADDR_A, str(port), str(count)],
            check=True,
            timeout=30,
        )
        got = [item.split(":") for item in receiver.communicate(timeout=30)[0].split()]
        seqs, latencies = [int(s) for s, _ in got], [float(lat) * 1000 for _, lat in got]
        assert link.relay.error is None
        assert link.relay.b_to_a.packets == count, link.relay.stats()  # nothing but our datagrams crossed
    finally:
        link.down()

    rng = th.TunRelay(link.ns_a, "x", link.ns_b, "y", delay_ms, loss, seed=seed).b_to_a.rng  # same generator
    expected = [i for i in range(count) if not rng.random() < loss / 100]
    assert seqs == expected  # the seeded loss pattern, and the order kept
    assert min(latencies) >= delay_ms - 1, min(latencies)
    assert statistics.median(latencies) < delay_ms + 15, statistics.median(latencies)
