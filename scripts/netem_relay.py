"""User-space stand-in for ``netem``: two network namespaces joined by TUN devices and a relay thread.

Used by scripts/two_host.py when the kernel has no sch_netem qdisc. Each namespace gets one TUN
device (layer 3, no packet-info header); a thread in the calling process reads every IP packet that
either side sends, drops it with probability LOSS% and otherwise delivers it to the other side
DELAY ms later. That is what a ``netem delay D loss L%`` qdisc on both ends of a veth pair does: D and
L apply to each direction separately, so the round trip is 2*D. Packets keep their order.

    link = TunRelay("nsA", "tun-a", "nsB", "tun-b", delay_ms=20, loss=1.0, seed=0)
    link.open()    # creates both TUN devices (RelayUnavailable if this machine cannot)
    ...            # the caller gives them addresses and brings them up with `ip`
    link.start()   # starts relaying
    ...
    link.close()   # stops the thread and closes the devices (they vanish with their descriptors)

Loss is drawn from one ``random.Random`` per direction seeded from SEED, so the n-th packet in a
direction is dropped or kept the same way on every run with the same seed. Which packet is the n-th
still depends on timing (retransmissions, the order in which processes start), so a run as a whole
is not bit-for-bit reproducible. A queue holding more than LIMIT packets drops the newest, as
netem's own ``limit`` does. Needs root (or CAP_NET_ADMIN) and /dev/net/tun. Standard library only.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import heapq
import os
import random
import select
import struct
import threading
import time

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
CLONE_NEWNET = 0x40000000
TUN_PATH = "/dev/net/tun"
NETNS_DIR = "/run/netns"  # where `ip netns add` mounts its namespaces
READ_BATCH = 64  # packets read from one device per wake-up before the other gets its turn


class RelayUnavailable(Exception):
    """The TUN relay cannot be set up on this machine; the message is a one-line reason."""


def _setns(fd: int) -> None:
    """Move the calling *thread* into the network namespace open at ``fd``."""
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _quiet_ipv6(ifname: str) -> None:
    """Turn IPv6 off on a new device (called inside its namespace): no router solicitations or MLD
    reports then cross the link, so only the job's own packets draw from the loss generator."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:  # no IPv6 in this kernel, or a read-only /proc/sys: harmless
        pass


def open_tun(netns: str, ifname: str) -> int:
    """Create TUN device ``ifname`` inside the named network namespace; returns its descriptor.

    The device belongs to the namespace that opens /dev/net/tun, so a short-lived thread enters the
    namespace (setns only moves that thread), opens the device and goes back. The device is not
    persistent: it disappears when the descriptor is closed, or when this process ends.
    """
    result: dict[str, object] = {}

    def work() -> None:
        home = -1
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)  # to come back to
            target = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                result["fd"] = fd
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TUN | IFF_NO_PI))
                _quiet_ipv6(ifname)
            finally:
                _setns(home)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            result["error"] = exc
            if "fd" in result:
                os.close(result.pop("fd"))  # type: ignore[arg-type]
        finally:
            if home >= 0:
                os.close(home)

    worker = threading.Thread(target=work, name=f"open-tun-{ifname}", daemon=True)
    worker.start()
    worker.join()
    if "error" in result:
        exc = result["error"]
        if isinstance(exc, FileNotFoundError) and exc.filename == TUN_PATH:
            raise RelayUnavailable(f"{TUN_PATH} not found (no TUN support)")
        if isinstance(exc, OSError):
            raise RelayUnavailable(f"cannot create TUN device {ifname} in namespace {netns}: {exc}")
        raise exc  # type: ignore[misc]
    return int(result["fd"])  # type: ignore[arg-type]


class _Direction:
    """Counters and the loss generator of one direction."""

    def __init__(self, name: str, seed: int):
        self.name = name
        self.rng = random.Random(seed)
        self.packets = self.dropped = self.overflow = self.delivered = self.write_errors = 0
        self.queued = 0


class TunRelay:
    """Two TUN devices in two namespaces, joined by a delaying, lossy relay thread."""

    def __init__(
        self,
        ns_a: str,
        if_a: str,
        ns_b: str,
        if_b: str,
        delay_ms: float,
        loss: float,
        seed: int = 0,
        limit: int = 10000,
    ):
        if delay_ms < 0 or not 0 <= loss <= 100:
            raise ValueError("delay_ms must be >= 0 and loss within 0..100")
        self.ns_a, self.if_a, self.ns_b, self.if_b = ns_a, if_a, ns_b, if_b
        self.delay_s, self.loss_p, self.seed, self.limit = delay_ms / 1000.0, loss / 100.0, seed, limit
        self.fd_a: int | None = None
        self.fd_b: int | None = None
        self.error: BaseException | None = None  # set when the relay thread died
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._stopping = False
        # Separate seeds per direction: the loss sequence of one does not depend on the other's traffic.
        self.a_to_b = _Direction("a->b", 2 * seed)
        self.b_to_a = _Direction("b->a", 2 * seed + 1)

    def open(self) -> None:
        """Create both devices (raises RelayUnavailable; on failure nothing stays open)."""
        if not os.path.exists(TUN_PATH):
            raise RelayUnavailable(f"{TUN_PATH} not found (no TUN support)")
        try:
            self.fd_a = open_tun(self.ns_a, self.if_a)
            self.fd_b = open_tun(self.ns_b, self.if_b)
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        if self.fd_a is None or self.fd_b is None:
            raise RuntimeError("open() the relay before start()")
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._guarded_run, name="netem-relay", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (at once, dropping queued packets) and close the devices. Idempotent."""
        self._stopping = True
        if self._thread is not None:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass
            self._thread.join(timeout=5)
            self._thread = None
        for name in ("fd_a", "fd_b", "_wake_r", "_wake_w"):
            fd = getattr(self, name)
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
            setattr(self, name, None if name.startswith("fd") else -1)

    def stats(self) -> str:
        """One line of counters, e.g. "a->b 812 pkts 9 lost, b->a 640 pkts 6 lost"."""
        parts = []
        for d in (self.a_to_b, self.b_to_a):
            extra = "".join(
                f" {n} {what}" for n, what in ((d.overflow, "over limit"), (d.write_errors, "write errors")) if n
            )
            parts.append(f"{d.name} {d.packets} pkts {d.dropped} lost{extra}")
        return ", ".join(parts)

    def _guarded_run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported to the owner through .error
            if not self._stopping:
                self.error = exc

    def _run(self) -> None:
        fa, fb, wake = self.fd_a, self.fd_b, self._wake_r
        assert fa is not None and fb is not None
        route = {fa: (fb, self.a_to_b), fb: (fa, self.b_to_a)}
        queue: list[tuple[float, int, int, _Direction, bytes]] = []  # (due, seq, dst fd, direction, packet)
        seq = 0
        poller = select.poll()
        for fd in (fa, fb, wake):
            poller.register(fd, select.POLLIN)
        while True:
            if queue:
                wait_ms = max(0.0, (queue[0][0] - time.monotonic()) * 1000.0)
                events = poller.poll(wait_ms)  # a float: Python rounds it up to whole ms, never down to 0
            else:
                events = poller.poll()  # idle: sleep until a packet arrives or close() wakes us
            for fd, ev in events:
                if fd == wake:
                    return
                if ev & (select.POLLERR | select.POLLNVAL):
                    raise OSError(errno.EIO, f"relay device error (poll events {ev:#x})")
                dst, d = route[fd]
                for _ in range(READ_BATCH):
                    try:
                        packet = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    d.packets += 1
                    if self.loss_p and d.rng.random() < self.loss_p:
                        d.dropped += 1
                        continue
                    if d.queued >= self.limit:
                        d.overflow += 1
                        continue
                    seq += 1
                    d.queued += 1
                    heapq.heappush(queue, (time.monotonic() + self.delay_s, seq, dst, d, packet))
            now = time.monotonic()
            while queue and queue[0][0] <= now:
                _, _, dst, d, packet = heapq.heappop(queue)
                d.queued -= 1
                try:
                    os.write(dst, packet)
                    d.delivered += 1
                except OSError:  # e.g. the device is down; the packet is lost like on a real link
                    d.write_errors += 1
