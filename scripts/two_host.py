#!/usr/bin/env python3
"""Two-host test harness: run a torchrun job across two "hosts" made of Linux network namespaces.

    python3 scripts/two_host.py [options] --nproc-a 1 --nproc-b 2 -- SCRIPT.py [script args...]

Host A (the server, node rank 0, 10.77.0.1) and host B (the worker, node rank 1, 10.77.0.2) live in
two fresh network namespaces joined by an emulated WAN link that delays every packet by --delay-ms
and drops --loss percent of them, in each direction separately (so the round trip is twice
--delay-ms). Two ways to build that link (--link):

  netem  a veth pair with a ``netem`` qdisc on both ends (needs sch_netem in the kernel and ``tc``);
  relay  one TUN device per namespace and a relay thread in this process that delays and drops
         packets (scripts/netem_relay.py; needs /dev/net/tun). Loss is reproducible per --seed.
  auto   (default) netem when the qdisc can be added, otherwise relay.

With --delay-ms 0 --loss 0, netem/auto use a plain veth pair. Each host runs

    PYTHON -m torch.distributed.run --nnodes 2 --node-rank {0|1} --nproc-per-node N
        --rdzv-backend static --rdzv-id ID --master-addr 10.77.0.1 --master-port PORT SCRIPT.py ARGS

inside its namespace, in the current directory and with this process's environment (PYTHONPATH
included), plus GLOO_SOCKET_IFNAME (and TP_SOCKET_IFNAME) set to its link device so that gloo binds
to the link instead of whatever the shared hostname resolves to. ``{host}`` inside ARGS becomes
``a`` or ``b``; the environment variable TWO_HOST says the same to the script.

Output: one line "two-host: link emulation: ..." says which link is used (and why netem was not),
each host's output follows prefixed with [a] or [b], and the last line is the summary
"two-host summary: ok|FAILED; link ...; ...".

Exit status: 0 when both hosts exit 0; 1 when either fails or the --timeout expires (both are then
killed); 77 ("skipped": one line "two-host test skipped: <reason>") when this machine cannot build
the requested link (not root, no ``ip``, no network namespaces, neither sch_netem nor TUN); 2 for
usage errors; 130 when interrupted (SIGINT, SIGTERM, SIGHUP). The namespaces, devices and every
process started inside them are removed on every path (short of SIGKILL). Standard library only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # netem_relay.py is a sibling, not a package
from netem_relay import RelayUnavailable, TunRelay

SKIP = 77
ADDR_A, ADDR_B, PREFIX = "10.77.0.1", "10.77.0.2", 24
# Devices are created directly inside the namespaces, so fixed names cannot clash.
VETH_A, VETH_B = "veth-srv", "veth-wrk"
TUN_A, TUN_B = "tun-srv", "tun-wrk"
LINK_MODES = ("auto", "netem", "relay")
PROBE_PORT = 29399
GRACE_S = 10.0  # once one host has failed, how long the other may go on before it is killed


class Skipped(Exception):
    """This machine cannot run the two-host test; the message is the one-line reason."""


class Interrupted(Exception):
    """SIGTERM/SIGHUP arrived; handled like Ctrl-C."""


def _raise_interrupted(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def run_cmd(cmd: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def first_line(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or proc.stdout or "").strip()
    return text.splitlines()[0] if text else f"exit status {proc.returncode}"


class TwoHostLink:
    """Two network namespaces joined by netem-shaped veth, plain veth or the TUN relay.

    After up(), ``kind`` is "netem", "veth" or "relay" and ``if_a``/``if_b`` name the devices.
    """

    def __init__(self, tag: str, delay_ms: float, loss: float, mode: str = "auto", seed: int = 0):
        self.ns_a, self.ns_b = f"flsrv{tag}", f"flwrk{tag}"
        self.delay_ms, self.loss, self.mode, self.seed = delay_ms, loss, mode, seed
        self.kind = ""
        self.if_a = self.if_b = ""
        self.netem_unavailable = ""  # why auto fell back to the relay
        self.relay: TunRelay | None = None
        self.created: list[str] = []

    @property
    def shaped(self) -> bool:
        return self.delay_ms > 0 or self.loss > 0

    def _shape(self) -> str:
        return f"delay {self.delay_ms:g}ms loss {self.loss:g}%"

    def describe(self) -> str:
        """Short form for the summary line, e.g. "relay (delay 20ms loss 1% per direction, seed 0)"."""
        if self.kind == "netem":
            return f"netem ({self._shape()} on each veth end)"
        if self.kind == "relay":
            return f"relay ({self._shape()} per direction, seed {self.seed})"
        return "veth (no delay or loss)"

    def announce(self) -> str:
        """The one line that says which link emulation is used, and why when it is not netem."""
        text = f"two-host: link emulation: {self.describe()}"
        if self.shaped:
            text += f", round trip ~{2 * self.delay_ms:g}ms"
        if self.kind == "relay":
            text += "; user-space TUN relay"
            if self.netem_unavailable:
                text += f" since netem failed: {self.netem_unavailable}"
        return text

    def _must(self, cmd: list[str], what: str, skip: bool = False) -> None:
        proc = run_cmd(cmd)
        if proc.returncode != 0:
            shown = cmd[4:] if cmd[:3] == ["ip", "netns", "exec"] else cmd  # the namespace name is noise
            msg = f"{what}: `{' '.join(shown)}` failed: {first_line(proc)}"
            raise Skipped(msg) if skip else RuntimeError(msg)

    def _configure(self, if_a: str, if_b: str) -> None:
        for ns, dev, addr in ((self.ns_a, if_a, ADDR_A), (self.ns_b, if_b, ADDR_B)):
            self._must(["ip", "-n", ns, "addr", "add", f"{addr}/{PREFIX}", "dev", dev], "cannot set an address")
            self._must(["ip", "-n", ns, "link", "set", "lo", "up"], "cannot bring lo up")
            self._must(["ip", "-n", ns, "link", "set", dev, "up"], f"cannot bring {dev} up")
        self.if_a, self.if_b = if_a, if_b

    def _veth_up(self) -> None:
        self._must(
            ["ip", "link", "add", VETH_A, "netns", self.ns_a, "type", "veth"]
            + ["peer", "name", VETH_B, "netns", self.ns_b],
            "cannot create a veth pair",
            skip=True,
        )
        if self.shaped:
            if shutil.which("tc") is None:
                raise Skipped("`tc` (iproute2) not found on PATH")
            netem = ["netem"]
            if self.delay_ms > 0:
                netem += ["delay", f"{self.delay_ms:g}ms"]
            if self.loss > 0:
                netem += ["loss", f"{self.loss:g}%"]
            for ns, dev in ((self.ns_a, VETH_A), (self.ns_b, VETH_B)):
                self._must(
                    ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", *netem],
                    "sch_netem qdisc unavailable",
                    skip=True,
                )
        self._configure(VETH_A, VETH_B)
        self.kind = "netem" if self.shaped else "veth"

    def _veth_down(self) -> None:
        run_cmd(["ip", "-n", self.ns_a, "link", "del", VETH_A])  # takes its peer along; fails if never made

    def _relay_up(self) -> None:
        self.relay = TunRelay(self.ns_a, TUN_A, self.ns_b, TUN_B, self.delay_ms, self.loss, seed=self.seed)
        try:
            self.relay.open()
        except RelayUnavailable as exc:
            self.relay = None
            raise Skipped(str(exc)) from None
        self._configure(TUN_A, TUN_B)
        self.relay.start()
        self.kind = "relay"

    def up(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            self.created.append(ns)  # before `ip netns add`: a Ctrl-C may land after it made the namespace
            self._must(["ip", "netns", "add", ns], "cannot create a network namespace", skip=True)
        if self.mode in ("auto", "netem"):
            try:
                self._veth_up()
                return
            except Skipped as exc:
                if self.mode == "netem":
                    raise
                self.netem_unavailable = str(exc)
                self._veth_down()
        try:
            self._relay_up()
        except Skipped as exc:
            if self.netem_unavailable:
                raise Skipped(f"no link emulation: netem: {self.netem_unavailable}; relay: {exc}") from None
            raise

    def failure(self) -> str:
        """Why the link itself broke during the run ("" while it is fine)."""
        if self.relay is not None and self.relay.error is not None:
            return f"the TUN relay failed: {self.relay.error!r}"
        return ""

    def stats(self) -> str:
        return f"; relay {self.relay.stats()}" if self.relay is not None else ""

    def kill_leftovers(self) -> None:
        """SIGKILL whatever still runs inside our namespaces (only processes this harness started)."""
        for ns in self.created:
            proc = run_cmd(["ip", "netns", "pids", ns])
            for pid in proc.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass

    def down(self) -> None:
        self.kill_leftovers()
        if self.relay is not None:
            self.relay.close()  # closing the descriptors removes the TUN devices
        listed = run_cmd(["ip", "netns", "list"]).stdout.split("\n")
        existing = {line.split()[0] for line in listed if line.strip()}
        for ns in reversed(self.created):  # deleting a namespace also deletes the devices in it
            if ns not in existing:
                continue  # never made (interrupted before `ip netns add`, or it failed)
            for _ in range(10):
                if run_cmd(["ip", "netns", "del", ns]).returncode == 0:
                    break
                time.sleep(0.2)
            else:
                print(f"two-host: warning: could not delete namespace {ns}", file=sys.stderr)
        self.created.clear()


def host_env(host: str, ifname: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # Drop a surrounding launcher's settings: torchrun reads PET_* as defaults for its flags.
        if not k.startswith(("PET_", "TORCHELASTIC_"))
        and k
        not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")
    }
    env["GLOO_SOCKET_IFNAME"] = ifname  # required: otherwise gloo binds to the hostname's address (127.0.0.1 here)
    env["TP_SOCKET_IFNAME"] = ifname  # only used by torch.distributed.rpc (TensorPipe); harmless otherwise
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    env["TWO_HOST"] = host
    return env


def probe_rtt(link: TwoHostLink, python: str, count: int = 5) -> float | None:
    """Median TCP connect time (one round trip) from host B to host A, in ms; None if the probe failed."""
    server_code = (
        "import socket,sys\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(({ADDR_A!r}, {PROBE_PORT})); s.listen(16); s.settimeout(30); print('ready', flush=True)\n"
        f"for _ in range({count}):\n    c, _ = s.accept(); c.close()\n"
    )
    client_code = (
        "import socket,time,statistics\n"
        "t=[]\n"
        f"for _ in range({count}):\n"
        "    t0=time.perf_counter()\n"
        f"    c=socket.create_connection(({ADDR_A!r}, {PROBE_PORT}), timeout=20)\n"
        "    t.append(time.perf_counter()-t0); c.close()\n"
        "print(statistics.median(t)*1000)\n"
    )
    server = subprocess.Popen(
        ["ip", "netns", "exec", link.ns_a, python, "-c", server_code], stdout=subprocess.PIPE, text=True
    )
    try:
        if server.stdout.readline().strip() != "ready":
            return None
        client = run_cmd(["ip", "netns", "exec", link.ns_b, python, "-c", client_code], timeout=60)
        return float(client.stdout.strip()) if client.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


class Host:
    """One torchrun launch inside a namespace, its output streamed with a prefix."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], lock: threading.Lock, log_path: str | None):
        self.name = name
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=os.getcwd(),  # relative script paths and data folders resolve as they do for the caller
            start_new_session=True,  # own process group: Ctrl-C reaches only the harness, which cleans up
        )
        self.killed = ""  # why the harness killed it, if it did
        self._log = open(log_path, "w") if log_path else None  # noqa: SIM115 (closed by the reader thread)
        self._lock = lock
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                print(f"[{self.name}] {line}", flush=True)
            if self._log:
                self._log.write(line + "\n")
        if self._log:
            self._log.close()

    def stop(self, why: str = "") -> None:
        """SIGTERM the launcher's process group (torchrun forwards it to its workers), SIGKILL after 5 s."""
        if self.proc.poll() is not None:
            return
        self.killed = why or "by the harness"
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def finish(self) -> None:
        self.proc.wait()
        self._reader.join(timeout=5)

    def outcome(self) -> str:
        code = self.proc.returncode
        if self.killed:
            return f"killed {self.killed}"
        return f"exit {code}" if code is not None and code >= 0 else f"signal {-code}"


def torchrun_cmd(
    args: argparse.Namespace, node_rank: int, nproc: int, rdzv_id: str, script_args: list[str]
) -> list[str]:
    return [
        args.python, "-m", "torch.distributed.run",
        "--nnodes", "2",
        "--node-rank", str(node_rank),
        "--nproc-per-node", str(nproc),
        "--rdzv-backend", "static",  # the default; named for clarity. Static needs --node-rank and --master-*.
        "--rdzv-id", rdzv_id,
        "--master-addr", ADDR_A,
        "--master-port", str(args.master_port),
        "--max-restarts", "0",
        args.script, *script_args,
    ]  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="two_host.py",
        usage="%(prog)s [options] -- SCRIPT.py [script args...]",
        description="Run SCRIPT.py under torchrun on two network-namespace hosts joined by an emulated WAN link "
        "(delay and loss in each direction).",
        epilog="'{host}' in the script args becomes 'a' (server, node rank 0) or 'b' (worker, node rank 1). "
        "Exit 0: both hosts ok; 1: a host failed or timed out; 77: skipped (cannot run here); 2: usage; "
        "130: interrupted.",
    )
    parser.add_argument("--nproc-a", type=int, default=1, help="processes on host A, the server (default 1)")
    parser.add_argument("--nproc-b", type=int, default=1, help="processes on host B, the worker (default 1)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="delay per direction, ms (default 20)")
    parser.add_argument("--loss", type=float, default=1.0, help="packet loss per direction, percent (default 1.0)")
    parser.add_argument(
        "--link",
        choices=LINK_MODES,
        default="auto",
        help="netem: veth + netem qdisc; relay: TUN devices + user-space relay (no sch_netem needed); "
        "auto: netem if the qdisc can be added, else relay (default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the relay's packet loss (default 0)")
    parser.add_argument("--timeout", type=float, default=300.0, help="wall-clock limit in seconds (default 300)")
    parser.add_argument("--master-port", type=int, default=29500, help="rendezvous port on host A (default 29500)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for torchrun (default: this one)")
    parser.add_argument("--log-dir", help="also write each host's output to LOG_DIR/host_a.log and host_b.log")
    parser.add_argument("--no-probe", action="store_true", help="skip the TCP round-trip probe of the link")
    if "--" in argv:
        cut = argv.index("--")
        opts, rest = argv[:cut], argv[cut + 1 :]
    else:
        opts, rest = argv, []
    args = parser.parse_args(opts)
    if not rest:
        parser.error("give the script after '--', e.g. -- scripts/gloo_smoke.py")
    args.script, args.script_args = rest[0], rest[1:]
    if args.nproc_a < 1 or args.nproc_b < 1:
        parser.error("--nproc-a and --nproc-b must be >= 1")
    if args.delay_ms < 0 or not 0 <= args.loss <= 100:
        parser.error("--delay-ms must be >= 0 and --loss within 0..100")
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    if not os.path.isfile(args.script):
        parser.error(f"script not found: {args.script}")
    return args


def preflight() -> None:
    if not sys.platform.startswith("linux"):
        raise Skipped(f"needs Linux network namespaces (platform is {sys.platform})")
    if os.geteuid() != 0:
        raise Skipped(f"needs root for network namespaces (euid {os.geteuid()})")
    if shutil.which("ip") is None:
        raise Skipped("`ip` (iproute2) not found on PATH")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)

    tag = str(os.getpid())
    link = TwoHostLink(tag, args.delay_ms, args.loss, mode=args.link, seed=args.seed)
    hosts: list[Host] = []
    t0 = time.monotonic()
    rtt_note = ""
    try:
        try:
            preflight()
            link.up()
        except Skipped as exc:
            print(f"two-host test skipped: {exc}", flush=True)
            return SKIP
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"two-host test failed: setting up the link: {exc}", flush=True)
            return 1
        print(link.announce(), flush=True)
        if not args.no_probe:
            rtt = probe_rtt(link, args.python)
            rtt_note = "; probe rtt failed" if rtt is None else f"; probe rtt {rtt:.1f}ms"
        print(f"two-host: link up ({link.if_a} {ADDR_A} <-> {link.if_b} {ADDR_B}{rtt_note})", flush=True)

        if args.log_dir:
            os.makedirs(args.log_dir, exist_ok=True)
        lock = threading.Lock()
        rdzv_id = f"two_host{tag}"
        for name, rank, nproc, ns, ifname in (
            ("a", 0, args.nproc_a, link.ns_a, link.if_a),
            ("b", 1, args.nproc_b, link.ns_b, link.if_b),
        ):
            script_args = [a.replace("{host}", name) for a in args.script_args]
            cmd = ["ip", "netns", "exec", ns, *torchrun_cmd(args, rank, nproc, rdzv_id, script_args)]
            log = os.path.join(args.log_dir, f"host_{name}.log") if args.log_dir else None
            hosts.append(Host(name, cmd, host_env(name, ifname), lock, log))

        deadline = t0 + args.timeout
        timed_out = False
        link_failure = ""
        first_failure: float | None = None
        while any(h.proc.poll() is None for h in hosts):
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            link_failure = link.failure()
            if link_failure:
                break
            if first_failure is None and any(h.proc.poll() not in (None, 0) for h in hosts):
                first_failure = now
            if first_failure is not None and now - first_failure >= GRACE_S:
                break
            time.sleep(0.2)
        if timed_out:
            stop_reason = f"after the {args.timeout:g}s timeout"
        elif link_failure:
            stop_reason = "because the link failed"
        else:
            stop_reason = f"{GRACE_S:g}s after the other host failed"
        for h in hosts:
            h.stop(stop_reason)
        link.kill_leftovers()
        for h in hosts:
            h.finish()

        wall = time.monotonic() - t0
        ok = not link_failure and all(h.proc.returncode == 0 and not h.killed for h in hosts)
        states = ", ".join(f"host {h.name} ({'server' if h.name == 'a' else 'worker'}) {h.outcome()}" for h in hosts)
        if not ok:
            why = f"timed out after {args.timeout:g}s" if timed_out else (link_failure or "a host failed")
            print(f"two-host test failed: {why}: {states}", flush=True)
        print(
            f"two-host summary: {'ok' if ok else 'FAILED'}; link {link.describe()}{rtt_note}{link.stats()}; "
            f"nproc a={args.nproc_a} b={args.nproc_b}; wall {wall:.1f}s",
            flush=True,
        )
        return 0 if ok else 1
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"two-host test interrupted ({str(exc) or 'SIGINT'}); cleaning up", flush=True)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # let the cleanup finish undisturbed
            signal.signal(sig, signal.SIG_IGN)
        for h in hosts:
            h.stop()
        link.down()


if __name__ == "__main__":
    sys.exit(main())
