"""Composition: a :class:`~fedlearn.config.RunConfig` into the run's parts, built in one place for the scripts,
the library entry (:func:`fedlearn.run`), the worker processes and the benchmark.

Each part comes from its registry entry (the dataset's source, the model's builder, the partition kind, the
local algorithm, the codec, the rule, the server step, the sinks); this module only wires them: the data and
the model, the clients' partition, the local trainer with its speeds and links, the server's pipeline, the
loop's options (checkpoints, resumption, the clients' test sets) and the run's listeners.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
from torch import nn

from .client import LocalJobConfig, LocalTrainer
from .client.stragglers import RoundStragglers
from .client.uplink import Uplink
from .comm.clock import ClientSpeeds, draw_links, draw_speeds
from .comm.codecs import Codec, build_codec, describe_upload, job_bytes
from .config import RunConfig, Script, from_flags
from .config.coerce import coerce_flags
from .config.status import older_values, resumable
from .core import seeding
from .core.checkpoint import Checkpointing, Expected, Layout, load_checkpoint
from .core.flat import get_flat
from .core.training import CLIENT_TESTS_FACT, ClientTests, momentum_of
from .data import Dataset, load_dataset
from .data.dataset import keep_clients
from .data.partitions import ClientPartition, partition_sizes
from .events import Events, Listener
from .events.console import Console
from .events.progress import ProgressBar
from .events.results_file import ResultsFile
from .events.sinks import open_sinks
from .loops.skeleton import LoopOptions
from .models import build_model, check_output, count_parameters
from .personal import build_personal, describe_personal
from .server.attacks import ATTACK_KINDS, choose_byzantine
from .server.pipeline import Batch, RobustAggregator, Threat
from .server.privacy import Accountant, GaussianSum, PrivacyConfig
from .server.steps import SERVER_STEPS, ServerStep, build_step


def config_for(script: str, **flags: Any) -> RunConfig:
    """The configuration a run of ``script`` with ``flags`` (keywords, as :func:`fedlearn.run` takes them) has:
    checked and resolved as the command line would."""
    values, given = coerce_flags(script, flags)
    return from_flags(values, Script(script), given)


def load_data(cfg: RunConfig, name: str, device: torch.device) -> Dataset:
    """The dataset ``name`` (already prepared; with ``--data_fraction``, a seeded share of its clients) on
    ``device``, in the run's memory layout."""
    data = load_dataset(name, cfg.data.data_dir, cfg.flags)
    fraction = cfg.flags["data_fraction"]
    if fraction < 1:
        data = keep_clients(data, fraction, seeding.numpy_rng(cfg.training.seed, seeding.DATA_FRACTION))
    return data.to(device, cfg.training.channels_last)


def initial_model(cfg: RunConfig, data: Dataset) -> nn.Module:
    """The model every run of this seed starts from (its own seeded stream), on the data's device; checked to map
    a batch of the data's inputs to logits of its classes."""
    torch.manual_seed(seeding.derive_seed(cfg.training.seed, seeding.INIT))
    model = worker_model(cfg, data)
    check_output(model, data.train_x[:2], data.num_classes, cfg.training.model)
    return model


def worker_model(cfg: RunConfig, data: Dataset) -> nn.Module:
    """A model of the run's kind on the data's device (its weights are set before use)."""
    shape = tuple(data.train_x.shape[1:])
    model = build_model(cfg.training.model, data.num_classes, cfg.training.channels_last, cfg.flags, shape)
    return model.to(data.train_x.device)


def describe(data: Dataset, name: str, how: str, model: nn.Module, device: torch.device) -> dict[str, Any]:
    """The run's facts for the Hyperparameters table and the JSON's ``run``."""
    facts = {
        "dataset": name,
        "dataset source": f"{data.source} ({how})",
        "training / test samples": f"{data.train_y.numel()} / {data.test_y.numel()}",
        "input (one sample)": f"{tuple(data.train_x.shape[1:])} {str(data.train_x.dtype).removeprefix('torch.')}",
        "classes": data.num_classes,
        "normalization (mean, std)": data.describe_normalization(),
        "test set fingerprint": data.test_fingerprint,
        "model parameters": count_parameters(model),
        "device": str(device),
        "torch threads": torch.get_num_threads(),
    }
    if data.train_clients is not None:
        test = "" if data.test_clients is None else ", their test samples too"
        facts["clients in the data"] = f"{len(torch.unique(data.train_clients))} (each sample's client is given{test})"
    if data.kept_clients is not None:
        facts["clients kept (--data_fraction)"] = f"{len(data.kept_clients)}, drawn from the seed"
    return facts


def needs_partition(cfg: RunConfig, data: Dataset) -> bool:
    """Federated runs split the data; the baseline only to show it or for its clients' test sets (held out, or
    the data's own with natural clients)."""
    federation = cfg.federation
    own_tests = federation.partition.kind == "natural" and data.test_clients is not None
    return (
        cfg.script is not Script.BASELINE or federation.show_partition or federation.client_test_frac > 0 or own_tests
    )


def make_partition(cfg: RunConfig, data: Dataset, context: dict[str, Any]) -> ClientPartition:
    """The clients' data as ``--partition`` asks, with their test sets held out if asked; notes it in ``context``."""
    rng = seeding.numpy_rng(cfg.training.seed, seeding.PARTITION)
    federation = cfg.federation
    partition = ClientPartition.create(
        federation.partition, data.train_y, federation.num_clients, rng,
        num_classes=data.num_classes, clients=data.train_clients, flags=cfg.flags,
    )  # fmt: skip
    fraction = federation.client_test_frac
    if fraction > 0:
        partition = partition.holding_out(
            fraction, data.train_y, seeding.numpy_rng(cfg.training.seed, seeding.HOLD_OUT)
        )
        held = sum(partition_sizes(partition.held_out))
        context["client test sets"] = f"{fraction:g} of each client's samples, stratified ({held} in all)"
    sizes = partition_sizes(partition.parts)
    context["partition"] = partition.describe()
    context["client samples (min / max)"] = f"{min(sizes)} / {max(sizes)}"
    context["label skew (mean TV distance, 0 = iid)"] = f"{float(partition.skew.mean()):.3f}"
    return partition


@dataclass(frozen=True)
class Clients:
    """The clients' side of a federated run: the local trainer, their speeds and links, who is Byzantine, and
    the JSON's ``clients`` section."""

    trainer: LocalTrainer
    speeds: ClientSpeeds
    threat: Threat
    summary: dict[str, Any]


def codec(cfg: RunConfig) -> Codec | None:
    """How clients encode their updates (None: they send their weights)."""
    return build_codec(cfg.flags)


def setup_clients(
    cfg: RunConfig,
    data: Dataset,
    partition: ClientPartition,
    context: dict[str, Any],
    initial: torch.Tensor | None = None,
) -> Clients:
    """Draw the Byzantine clients, build the local trainer over ``partition`` (with the run's personalization,
    from the ``initial`` weights), draw client speeds and links; notes them in ``context``."""
    t, federation = cfg.training, cfg.federation
    job = LocalJobConfig(t.optimizer, t.lr, t.batch_size, federation.local_epochs, t.seed, federation.prox_mu,
                         federation.drift_correction, t.augment, cfg.flags)  # fmt: skip
    threat = Threat(choose_byzantine(t.seed, federation.num_clients, cfg.threat.byzantine), cfg.threat.attack,
                    cfg.threat.attack_scale)  # fmt: skip
    if threat.byzantine:
        context["Byzantine clients"] = ", ".join(map(str, threat.byzantine))
    model, encoding = worker_model(cfg, data), codec(cfg)
    flipped = frozenset(threat.byzantine) if ATTACK_KINDS[threat.attack].part.flips_labels else frozenset()
    uplink = Uplink(encoding, cfg.comm.error_feedback, t.seed)
    personal = build_personal(cfg.flags, model, initial if initial is not None else get_flat(model))
    trainer = LocalTrainer(model, data, partition.parts, job, flipped, uplink, round_stragglers(cfg), personal)
    dim = count_parameters(model)
    if personal is not None:
        context["personalization"] = describe_personal(personal, dim, cfg.federation.num_clients)
    context["client upload"] = describe_upload(encoding, dim, cfg.comm.error_feedback)
    speeds = client_speeds(cfg, job_bytes(dim, encoding, trainer.sends_control), context)
    summary = {"sizes": partition_sizes(partition.parts), "rates": [float(r) for r in speeds.rates],
               "byzantine": list(threat.byzantine)}  # fmt: skip
    if speeds.links is not None:
        summary["downlink_mbps"] = [float(r) / 1e6 for r in speeds.links.down_bps]  # inf (null): no limit
        summary["uplink_mbps"] = [float(r) / 1e6 for r in speeds.links.up_bps]
    return Clients(trainer, speeds, threat, summary)


def round_preparation(cfg: RunConfig, trainer: LocalTrainer) -> Callable[[Batch, int], Batch] | None:
    """The server's part before its checks in synchronous rounds: FedNova's normalization, or FedPer's keeping
    of the personal layers out of the average (None: neither)."""
    normalize = trainer.algorithm.normalize
    if normalize is not None:
        return normalize(trainer.num_batches, fednova_momentum(cfg))
    return getattr(trainer.personal, "server_part", None)


def round_stragglers(cfg: RunConfig) -> RoundStragglers | None:
    """Each synchronous round's stragglers (``--round_stragglers``), when some clients are cut short."""
    flags, federation = cfg.flags, cfg.federation
    if cfg.script is not Script.FEDERATED or not flags["round_stragglers"]:
        return None
    return RoundStragglers(cfg.training.seed, federation.num_clients, federation.num_select,
                           flags["round_stragglers"], federation.local_epochs, flags["straggler_work"])  # fmt: skip


def client_speeds(cfg: RunConfig, sizes: tuple[int, int], context: dict[str, Any]) -> ClientSpeeds:
    """Every client's training rate and, when sending takes time, its link (each drawn once from the seed; a
    job moves ``sizes`` bytes down and up)."""
    n, seed = cfg.federation.num_clients, cfg.training.seed
    speeds = draw_speeds(n, seeding.numpy_rng(seed, seeding.CLOCK), cfg.clock)
    context["client rates (min / max, samples/s)"] = f"{speeds.rates.min():.1f} / {speeds.rates.max():.1f}"
    links = draw_links(n, seeding.numpy_rng(seed, seeding.BANDWIDTH), cfg.clock, sizes)
    if links is None:
        return speeds
    transfer = [links.transfer_seconds(c) for c in range(n)]
    context["client transfer per job (min / max, simulated s)"] = f"{min(transfer):.3f} / {max(transfer):.3f}"
    return replace(speeds, links=links)


def privacy(cfg: RunConfig) -> PrivacyConfig | None:
    """DP-FedAvg's settings, when ``--dp_clip`` asks for it."""
    p, fed = cfg.privacy, cfg.federation
    return None if p.clip is None else PrivacyConfig(p.clip, p.noise, p.delta, fed.num_select, fed.num_clients)


def server_parts(cfg: RunConfig, dim: int, threat: Threat) -> tuple[RobustAggregator, ServerStep]:
    """The server's parts as the configuration asks: attack simulation, checks, clipping and rule (the
    aggregator; DP's noisy sum in the rule's place), then the server step (FedAsync's mix, or the optimizer)."""
    dp = privacy(cfg)
    noisy = GaussianSum(dp, cfg.training.seed) if dp is not None else None
    aggregator = RobustAggregator(dim, cfg.threat.rule, threat, cfg.threat.clip_norm, cfg.training.seed, noisy)
    if cfg.asynchronous is None:
        return aggregator, build_step(cfg.server_opt)
    server = cfg.asynchronous.server
    buffered = cfg.asynchronous.buffered
    return aggregator, build_step(cfg.server_opt, mix=None if buffered else server.alpha)


def privacy_annotator(dp: PrivacyConfig) -> Any:
    """Adds the privacy loss so far to each history entry as it is made: ``dp_epsilon`` (tight) and
    ``dp_epsilon_rdp`` (the RDP bound)."""
    accountant = Accountant(dp)

    def annotate(entry: dict[str, Any]) -> None:
        entry["dp_epsilon"] = accountant.epsilon(entry["step"])
        entry["dp_epsilon_rdp"] = accountant.epsilon_rdp(entry["step"])

    return annotate


def checkpoint_layout(cfg: RunConfig, dim: int, trainer: LocalTrainer | None = None) -> Layout:
    """What this run's parts keep in a checkpoint (the schema a resumed checkpoint must fit)."""
    keys = SERVER_STEPS[cfg.server_opt.name].info.state_keys
    client_state = trainer.client_state_keys if trainer is not None else ()
    control = trainer is not None and trainer.sends_control
    sizes = tuple(trainer.client_state_sizes.items()) if trainer is not None else ()
    return Layout(dim, RobustAggregator.COUNTERS, keys, client_state, control, sizes)


def loop_options(
    cfg: RunConfig,
    data: Dataset,
    partition: ClientPartition | None,
    context: dict[str, Any],
    events: Listener,
    layout: Layout | None = None,
) -> LoopOptions:
    """What every loop is told: seed, target, listeners, the clients' test sets (from ``partition``), what
    ``--checkpoint`` and ``--resume`` ask for (``layout``: what this run checkpoints), and with DP the privacy
    loss on every history entry; notes a resumption in ``context``."""
    settings, script, multi = dict(cfg.flags), cfg.script.value, cfg.multi
    checkpointing = None
    if multi.checkpoint:
        checkpointing = Checkpointing(multi.checkpoint, multi.checkpoint_every, settings, script)
    resume = None
    if multi.resume:
        expected = Expected(script, settings, resumable(script), older_values(), layout or Layout(0))
        resume = load_checkpoint(multi.resume, expected)
        done = f"{resume['round']} rounds" if "round" in resume else f"{resume['arrivals']} updates"
        context["resumed from"] = f"{multi.resume} (after {done})"
    tests = client_tests(data, partition)
    if tests is not None:
        context[CLIENT_TESTS_FACT] = tests.fingerprint()
    dp = privacy(cfg) if cfg.script is not Script.BASELINE else None
    annotators = (privacy_annotator(dp),) if dp is not None else ()
    t = cfg.training
    return LoopOptions(t.seed, t.target_accuracy, cfg.output.progress, checkpointing, resume, tests, events,
                       annotators)  # fmt: skip


def with_personal(options: LoopOptions, trainer: LocalTrainer) -> LoopOptions:
    """The loop's options with the clients' personalized accuracies evaluated beside the global model's."""
    if trainer.personal is None or options.client_tests is None:
        return options
    return replace(options, personal=partial(trainer.personal.accuracies, trainer, options.client_tests))


def client_tests(data: Dataset, partition: ClientPartition | None) -> ClientTests | None:
    """Every client's own test set: held out from its samples (``--client_test_frac``), or with natural clients
    the data's test samples of its id; None when clients have none."""
    if partition is None:
        return None
    if partition.held_out is not None:
        return ClientTests.gather(data.train_x, data.train_y, partition.held_out)
    if partition.spec.kind == "natural" and data.test_clients is not None:
        return ClientTests.by_id(data.test_x, data.test_y, data.test_clients, torch.unique(data.train_clients))
    return None


def listeners(cfg: RunConfig) -> Events:
    """The run's listeners: the tables, the progress bar, every ``--log`` sink, the results JSON."""
    found: list[Listener] = [Console()]
    if cfg.output.progress:
        found.append(ProgressBar())
    found += open_sinks(cfg.flags)
    if cfg.output.save:
        found.append(ResultsFile(cfg.output.save))
    return Events(found)


def fednova_momentum(cfg: RunConfig) -> float:
    """The local optimizer's heavy-ball momentum (FedNova normalizes by it)."""
    return momentum_of(cfg.training.optimizer) or 0.0
