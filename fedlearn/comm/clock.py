"""Simulated client speeds and job durations on a virtual clock (no sleeping).

Each client gets a training rate (samples per simulated second) drawn once from
the seed; a local job lasts ``samples / rate + comm_delay`` simulated seconds,
plus, when the clients' links are limited (``--uplink_mbps``, ``--downlink_mbps``,
``--latency``), ``2 latency + 8 down / downlink + 8 up / uplink`` for the
bytes it downloads and uploads (links drawn once from the seed too).
Synchronous rounds last as long as their slowest picked client; the
asynchronous timeline (who trains when, from which model) is planned here too.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..registry import FEDERATED_SCRIPTS, Entry, Flag, Flags, Range, Registry


@dataclass(frozen=True)
class ClientLinks:
    """Every client's link: download and upload rates (bits per simulated second; inf: no limit), the one-way
    latency of a message, and the bytes one job downloads and uploads."""

    down_bps: np.ndarray
    up_bps: np.ndarray
    latency: float
    job_bytes: tuple[int, int]  # (download, upload)

    def transfer_seconds(self, client: int) -> float:
        """Two messages' latency, the model down and the update up."""
        down, up = self.job_bytes
        return 2 * self.latency + 8 * down / float(self.down_bps[client]) + 8 * up / float(self.up_bps[client])


@dataclass(frozen=True)
class ClientSpeeds:
    """Per-client training rates, the communication delay of one job (download + upload), and the links."""

    rates: np.ndarray  # samples per simulated second, one per client
    comm_delay: float = 0.0
    links: ClientLinks | None = None  # None: sending costs no time beyond comm_delay

    def job_duration(self, client: int, samples: int) -> float:
        """Simulated seconds for ``client`` to receive the model, train ``samples`` samples and reply."""
        seconds = samples / float(self.rates[client]) + self.comm_delay
        return seconds if self.links is None else seconds + self.links.transfer_seconds(client)

    def round_duration(self, clients: list[int] | np.ndarray, samples: list[int] | np.ndarray) -> float:
        """A synchronous round: the slowest of the picked clients' jobs."""
        return max(self.job_duration(int(c), int(s)) for c, s in zip(clients, samples))


@dataclass(frozen=True)
class ClockConfig:
    """How client speeds are drawn (``--delay`` and its settings)."""

    delay: str = "none"
    client_rate: float = 1000.0
    comm_delay: float = 0.0
    straggler_fraction: float = 0.25
    straggler_slowdown: float = 10.0
    delay_spread: float = 1.0
    uplink_mbps: float = 0.0  # 0: no limit
    downlink_mbps: float = 0.0
    latency: float = 0.0
    bandwidth: str = "fixed"
    bandwidth_spread: float = 1.0

    @property
    def limits_links(self) -> bool:
        """Whether sending takes time on the clock (a rate limit or a latency)."""
        return self.uplink_mbps > 0 or self.downlink_mbps > 0 or self.latency > 0


def _stragglers(num_clients: int, rng: np.random.Generator, c: ClockConfig) -> np.ndarray:
    slowdown = np.ones(num_clients)
    count = int(round(c.straggler_fraction * num_clients))
    slowdown[rng.choice(num_clients, size=count, replace=False)] = c.straggler_slowdown
    return slowdown


DELAYS = Registry.of(
    "delay models",
    Flag("delay", "none", str, group="clock", federated=True,
         help="client speed model: none, straggler (a fraction is slower), lognormal or uniform slowdowns"),
    [
        Entry("none", lambda n, rng, c: np.ones(n), "every client at --client_rate"),
        Entry("straggler", _stragglers, "a fraction of the clients is slower", flags=(
            Flag("straggler_fraction", 0.25, float, group="clock", federated=True, valid=Range(0, 1),
                 help="share of stragglers (--delay straggler)"),
            Flag("straggler_slowdown", 10.0, float, group="clock", federated=True, valid=Range(1, 1e6),
                 help="how many times slower a straggler is"))),
        Entry("lognormal", lambda n, rng, c: np.exp(c.delay_spread * rng.standard_normal(n)),
              "slowdowns exp(sigma Z)", uses=("delay_spread",)),
        Entry("uniform", lambda n, rng, c: rng.uniform(1.0, 1.0 + c.delay_spread, size=n),
              "slowdowns uniform in [1, 1 + spread]", uses=("delay_spread",)),
    ],
    flags=(
        Flag("client_rate", 1000.0, float, group="clock", federated=True, valid=Range(1e-3, 1e9), headline=False,
             help="samples per simulated second of a normal client"),
        Flag("comm_delay", 0.0, float, group="clock", federated=True, valid=Range(0, 1e9), headline=False,
             help="simulated seconds of communication per job"),
        Flag("delay_spread", 1.0, float, group="clock", federated=True, valid=Range(0, 10), headline=False,
             help="lognormal sigma, or uniform slowdown in [1, 1+spread]"),
    ),
    off="none",
    scripts=FEDERATED_SCRIPTS,
)  # fmt: skip
"""Every client speed model by name (``--delay``): an entry's part draws each client's slowdown factor."""


def draw_speeds(num_clients: int, rng: np.random.Generator, config: ClockConfig = ClockConfig()) -> ClientSpeeds:
    """Draw every client's rate once, by ``config.delay``:

    - ``none``: all clients train at ``client_rate``.
    - ``straggler``: ``round(straggler_fraction * N)`` clients, picked at random,
      are ``straggler_slowdown`` times slower.
    - ``lognormal``: slowdown factors ``exp(sigma * Z)`` with ``sigma = delay_spread``
      (median 1).
    - ``uniform``: slowdown factors uniform in ``[1, 1 + delay_spread]``.
    """
    if config.delay not in DELAYS:
        raise ValueError(f"unknown delay model {config.delay!r}; choose from {', '.join(DELAYS)}")
    slowdown = DELAYS[config.delay].part(num_clients, rng, config)
    return ClientSpeeds(rates=config.client_rate / slowdown, comm_delay=config.comm_delay)


def _limits_links(flags: Flags, script: str) -> bool:
    return flags.uplink_mbps > 0 or flags.downlink_mbps > 0 or flags.latency > 0


BANDWIDTHS = Registry.of(
    "bandwidth models",
    Flag("bandwidth", "fixed", str, group="comm", federated=True, older="fixed",
         help="fixed: every client at the rates above; lognormal: each client's rates times exp(-spread Z)"),
    [
        Entry("fixed", lambda n, rng, c: np.ones(n), "every client at the rates given"),
        Entry("lognormal", lambda n, rng, c: np.exp(-c.bandwidth_spread * rng.standard_normal(n)),
              "each client's rates times exp(-spread Z)", flags=(
                  Flag("bandwidth_spread", 1.0, float, group="comm", federated=True, older=1.0, valid=Range(0, 10),
                       help="lognormal sigma of --bandwidth lognormal"),)),
    ],
    flags=(
        Flag("uplink_mbps", 0.0, float, group="comm", federated=True, older=0.0, valid=Range(1e-6, 1e6, or_zero=True),
             help="client upload rate in Mbit/s (0: no limit)"),
        Flag("downlink_mbps", 0.0, float, group="comm", federated=True, older=0.0, valid=Range(1e-6, 1e6, or_zero=True),
             help="client download rate in Mbit/s (0: no limit)"),
        Flag("latency", 0.0, float, group="comm", federated=True, older=0.0, valid=Range(0, 1e6),
             help="one-way simulated seconds per message (2 per job)"),
    ),
    active=_limits_links,
    scripts=FEDERATED_SCRIPTS,
)  # fmt: skip
"""Every link model by name (``--bandwidth``): an entry's part draws each client's rate factor; in use when
sending takes time (a rate limit or a latency)."""


def draw_links(
    num_clients: int, rng: np.random.Generator, config: ClockConfig, job_bytes: tuple[int, int]
) -> ClientLinks | None:
    """Every client's link, by ``config.bandwidth`` (None when nothing is limited):

    - ``fixed``: every client at ``downlink_mbps`` / ``uplink_mbps`` (0: no limit);
    - ``lognormal``: each client's two rates times one factor ``exp(-sigma Z)``, ``sigma = bandwidth_spread``
      (median: the rates given; a client slow one way is slow the other way).
    """
    c = config
    if not c.limits_links:
        return None
    if c.bandwidth not in BANDWIDTHS:
        raise ValueError(f"unknown bandwidth model {c.bandwidth!r}; choose from {', '.join(BANDWIDTHS)}")
    factor = BANDWIDTHS[c.bandwidth].part(num_clients, rng, c)

    def rates(mbps: float) -> np.ndarray:
        return np.full(num_clients, np.inf) if mbps == 0 else mbps * 1e6 * factor

    return ClientLinks(rates(c.downlink_mbps), rates(c.uplink_mbps), c.latency, job_bytes)


@dataclass(frozen=True)
class PlannedJob:
    """One asynchronous local job, in the order the server receives them."""

    index: int  # arrival order, 0-based
    client: int
    dispatched_after: int  # arrivals the server had processed when it sent this job its model
    dispatch_time: float
    arrival_time: float


class AsyncTimeline:
    """The asynchronous timeline on the virtual clock, planned one arrival at a time (memory O(clients)).

    ``concurrency`` clients, drawn at random, start at time 0 with the initial
    model. Whenever the earliest job finishes (ties: first dispatched first),
    its client becomes idle and a client drawn at random among the idle ones is
    sent the model as it is after that arrival. Durations depend only on the
    speeds and ``job_samples[c]`` (samples one job of client ``c`` trains), so
    the timeline is fixed by the seed, however far it is planned.
    """

    def __init__(
        self, speeds: ClientSpeeds, job_samples: Sequence[int], concurrency: int, rng: np.random.Generator
    ) -> None:
        num_clients = len(speeds.rates)
        if not 1 <= concurrency <= num_clients:
            raise ValueError(f"concurrency must be in [1, {num_clients}], got {concurrency}")
        self._speeds, self._job_samples, self._rng = speeds, job_samples, rng
        self._idle = list(range(num_clients))
        self._in_flight: list[tuple[float, int, int, int, float]] = []  # (finish, order, client, after, start)
        self._dispatched = 0
        self.arrivals = 0
        for _ in range(concurrency):
            self._dispatch(0.0)

    def _dispatch(self, now: float) -> None:
        client = self._idle.pop(int(self._rng.integers(len(self._idle))))
        finish = now + self._speeds.job_duration(client, self._job_samples[client])
        heapq.heappush(self._in_flight, (finish, self._dispatched, client, self.arrivals, now))
        self._dispatched += 1

    def next_arrival(self) -> PlannedJob:
        """The next job to reach the server; its client is then idle and another is sent the model."""
        finish, _, client, after, start = heapq.heappop(self._in_flight)
        job = PlannedJob(self.arrivals, client, after, start, finish)
        self.arrivals += 1
        self._idle.append(client)
        self._dispatch(finish)
        return job

    def models_in_use(self) -> set[int]:
        """Arrival counts after which the jobs now in flight were sent their model."""
        return {entry[3] for entry in self._in_flight}


def plan_async_jobs(
    speeds: ClientSpeeds,
    job_samples: Sequence[int],
    concurrency: int,
    num_jobs: int,
    rng: np.random.Generator,
) -> list[PlannedJob]:
    """The first ``num_jobs`` arrivals of an :class:`AsyncTimeline`, as a list."""
    timeline = AsyncTimeline(speeds, job_samples, concurrency, rng)
    return [timeline.next_arrival() for _ in range(num_jobs)]
