"""Round two of bad inputs (issue 31): numerically meaningless values, runs that diverge, sweeps checked before
they start, checkpoints and data files that would make the reader allocate far more than they hold."""

import io
import json
import math
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch
from test_hardening import TINY, _checkpoint, _craft, call

from conftest import REPO, write_cifar
from fedlearn.analysis import sweep
from fedlearn.app import main
from fedlearn.events.recorder import divergence
from fedlearn.server.privacy import TIGHT_CAP, Accountant, PrivacyConfig

FLAGS = ["--num_select_clients", "4", "--global_epoch", "1"]


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--threads_per_worker", "1000000000000"], "--threads_per_worker"),
        (["--server_opt", "adam", "--server_tau", "1e-300", "--compress", "topk"], "--server_tau"),
        (["--downlink_mbps", "5e-324"], "--downlink_mbps"),
        (["--uplink_mbps", "1e-300"], "--uplink_mbps"),
    ],
)
def test_values_too_small_to_mean_anything_are_refused(argv, flag, tiny_data_dir, capsys):
    code, err = call("run_federated", ["--data_dir", str(tiny_data_dir), *TINY, *argv], capsys)
    assert code == 2 and len(err) == 1 and flag in err[0] and "must be" in err[0], err


def test_zero_still_means_no_rate_limit(tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["--data_dir", str(tiny_data_dir), *TINY, *FLAGS, "--uplink_mbps", "0", "--save", str(out)]
    assert call("run_federated", argv, capsys)[0] == 0
    assert json.loads(out.read_text())["final"]["sim_time"] > 0


def test_a_vanishing_noise_multiplier_reports_an_infinite_epsilon(tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "dp.json"
    argv = [
        "--data_dir",
        str(tiny_data_dir),
        *TINY,
        *FLAGS,
        "--dp_clip",
        "1",
        "--dp_noise",
        "1e-300",
        "--save",
        str(out),
    ]
    code, err = call("run_federated", argv, capsys)
    final = json.loads(out.read_text())["final"]
    assert code == 0 and err == [f"results written to {out}"], err
    assert final["dp_epsilon"] is None and "RDP bound" in final["dp_accountant"]


def test_above_the_cap_epsilon_is_the_rdp_bound_and_no_grid_is_built():
    small = Accountant(PrivacyConfig(1.0, 1e-3, 1e-5, 4, 4))  # the tight grid would need 30 GiB
    assert not small.is_tight(1) and small.pld is None
    assert small.epsilon(1) == small.epsilon_rdp(1) > TIGHT_CAP
    assert small.epsilon(1) == pytest.approx(2200111.78, rel=1e-6)  # RDP's alpha / (2 sigma^2) - log(delta)/(alpha-1)
    usual = Accountant(PrivacyConfig(1.0, 1.0, 1e-5, 4, 4))
    assert usual.is_tight(1) and usual.epsilon(1) < usual.epsilon_rdp(1) <= TIGHT_CAP


def test_divergence_is_the_first_non_finite_loss_or_clock():
    entry = {"step": 1, "test_loss": 0.5, "sim_time": 2.0}
    assert divergence([entry]) is None
    history = [entry, {**entry, "step": 2, "test_loss": float("nan")}, {**entry, "step": 3, "test_loss": None}]
    assert divergence(history)["step"] == 2 and "nan" in divergence(history)["why"]
    assert divergence([{**entry, "sim_time": math.inf}])["why"].startswith("the simulated time became inf")


NAN_MODEL = """
import math
import torch
from torch import nn

def nan_model(input_shape, num_classes):
    model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))
    with torch.no_grad():
        model[1].bias.fill_(float("nan"))
    return model
"""


def test_a_diverged_run_says_when_in_one_line_the_table_and_the_json(tiny_data_dir, tmp_path, capsys):
    (tmp_path / "nan_model.py").write_text(NAN_MODEL)
    out = tmp_path / "d.json"
    argv = ["--data_dir", str(tiny_data_dir), *TINY, "--epoch", "2", "--model", f"{tmp_path}/nan_model.py:nan_model",
            "--save", str(out)]  # fmt: skip
    code = main("run_baseline", argv)
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    final = json.loads(out.read_text())["final"]
    assert code == 0 and final["diverged"]["step"] == 1 and final["test_loss"] is None
    assert warnings == [f"run_baseline.py: warning: diverged at step 1: {final['diverged']['why']}"]
    assert "| Diverged" in captured.out


def test_compare_reads_the_largest_times_a_script_writes(tiny_data_dir, tmp_path, capsys):
    from fedlearn.analysis.compare import compare

    out = tmp_path / "slow.json"
    argv = ["--data_dir", str(tiny_data_dir), *TINY, *FLAGS, "--uplink_mbps", "1e-6", "--save", str(out)]
    assert call("run_federated", argv, capsys)[0] == 0
    document = json.loads(out.read_text())
    assert document["final"]["sim_time"] > 1e6  # megabytes at one bit per second
    document["final"]["sim_time"] = document["history"][-1]["sim_time"] = 9.3e299
    out.write_text(json.dumps(document))
    assert "9.300e+299" in compare([str(out)])


@pytest.mark.parametrize(
    "own, common_extra, says",
    [
        (["--scripts", "run_federated", "--vary", "compress=topk,zip"], [], "invalid choice: 'zip'"),
        (["--scripts", "run_federated", "--vary", "seed=abc"], [], "invalid int value: 'abc'"),
        (["--scripts", "run_federated", "--vary", "init_lr=1e-3,0"], [], "--init_lr must be in"),
        (
            ["--scripts", "run_federated", "--vary", "compress_ratio=0.1,nan"],
            ["--compress", "topk"],
            "--compress_ratio",
        ),
        (["--scripts", "run_async", "--vary", "dp_clip=1"], [], "--dp_clip"),
        (["--scripts", "run_federated", "--seeds", "0,99999999999999999999999"], [], "--seed must be in"),
    ],
)
def test_a_sweep_checks_every_run_before_the_first_starts(own, common_extra, says, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "S"
    code = sweep.main(["--out", str(out), *own, "--", "--data_dir", str(tiny_data_dir), *TINY, *common_extra])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and says in err[0] and "run " in err[0], err
    assert not out.exists()


def test_a_negative_second_moment_is_refused(tiny_data_dir, tmp_path, capsys):
    flags, _, state = _checkpoint(tmp_path, tiny_data_dir, "run_federated", "--global_epoch", "2", "--server_opt",
                                  "adam")  # fmt: skip
    _craft(state, tmp_path / "crafted.pt", lambda s: s["server_step"].update(v=-s["server_step"]["v"] - 1))
    capsys.readouterr()
    code, err = call("run_federated", [*flags, "--resume", str(tmp_path / "crafted.pt")], capsys)
    assert code == 1 and len(err) == 1 and "server_step.v holds values below 0" in err[0], err


def test_resuming_with_a_flag_the_script_never_uses_changed_is_allowed(tiny_data_dir, tmp_path, capsys):
    flags, ckpt, _ = _checkpoint(tmp_path, tiny_data_dir, "run_federated", "--global_epoch", "2", "--epoch", "3")
    resumed = [*flags[: flags.index("--epoch")], "--epoch", "7", "--global_epoch", "3"]
    assert call("run_federated", [*resumed, "--resume", str(ckpt)], capsys)[0] == 0


def _peak_mib(setup: str, call: str) -> tuple[float, str]:
    """Run ``setup`` (imports), then ``call`` under tracemalloc, in a fresh interpreter; the call's peak
    allocation (MiB) and the one line it printed."""
    script = "\n".join([textwrap.dedent(setup), "import tracemalloc", "tracemalloc.start()", textwrap.dedent(call),
                         "print(tracemalloc.get_traced_memory()[1] / 2**20)"])  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return float(lines[-1]), lines[-2] if len(lines) > 1 else ""


CIFAR_BOMBS = {
    "memo index 2^26": b"\x80\x02Nr" + struct.pack("<I", 2**26) + b".",
    "bytes8 of 2^62": b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"xx.",
    "frame of 2^62": b"\x80\x04\x95" + struct.pack("<Q", 2**62) + b"N.",
}


@pytest.mark.parametrize("case", CIFAR_BOMBS)
def test_a_cifar_batch_cannot_make_the_reader_allocate_what_it_does_not_hold(case, tmp_path):
    folder = write_cifar(tmp_path, n_train=50, n_test=10)
    (folder / "test_batch").write_bytes(CIFAR_BOMBS[case])
    setup = (
        "from pathlib import Path\nfrom fedlearn.data.cifar import _read_checked\nfrom fedlearn.errors import DataError"
    )
    code = f"""
    try:
        _read_checked(Path({str(folder / "test_batch")!r}))
    except DataError as exc:
        print(exc)
    """
    peak, said = _peak_mib(setup, code)
    assert peak < 16 and "is corrupt" in said, (peak, said)


def test_an_object_dtype_in_a_cifar_batch_is_refused(tmp_path):
    folder = write_cifar(tmp_path, n_train=50, n_test=10)
    entry = {"data": np.zeros((10, 3072), np.uint8), "labels": np.array([None] * 10, dtype=object)}
    raw = pickle.dumps(entry, protocol=2)
    (folder / "test_batch").write_bytes(raw)
    from fedlearn.data.cifar import _read_checked
    from fedlearn.errors import DataError

    with pytest.raises(DataError, match="dtype object is not allowed"):
        _read_checked(folder / "test_batch")


def test_a_compressed_checkpoint_is_refused_before_it_is_inflated(tmp_path):
    plain, bomb = io.BytesIO(), tmp_path / "bomb.pt"
    torch.save({"format": 2, "weights": torch.zeros(2**25)}, plain)  # 128 MiB of zeros, deflated to ~130 KB
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, source.read(entry))
    assert bomb.stat().st_size < 2**20
    setup = (
        "from fedlearn.core.checkpoint import Expected, Layout, load_checkpoint\nfrom fedlearn.errors import DataError"
    )
    code = f"""
    try:
        load_checkpoint({str(bomb)!r}, Expected("run_federated", {{}}, frozenset(), {{}}, Layout(1)))
    except DataError as exc:
        print(exc)
    """
    peak, said = _peak_mib(setup, code)
    assert peak < 16 and "is compressed" in said, (peak, said)


def test_an_npz_whose_header_claims_more_than_it_holds_is_refused(tmp_path):
    header, path = io.BytesIO(), tmp_path / "claims.npz"
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**38,)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x_train.npy", header.getvalue() + bytes(1000))
    setup = "from fedlearn.data.arrays import _read_npz\nfrom fedlearn.errors import UsageError"
    code = f"""
    try:
        _read_npz({str(path)!r})
    except UsageError as exc:
        print(exc)
    """
    peak, said = _peak_mib(setup, code)
    assert peak < 16 and "claims 1099511627776 bytes but holds 1128" in said, (peak, said)


def test_a_test_share_that_holds_out_nothing_is_refused(tiny_data_dir, capsys):
    argv = ["--data_dir", str(tiny_data_dir), *TINY, "--client_test_frac", "0.001"]
    code, err = call("run_federated", argv, capsys)
    assert code == 2 and len(err) == 1 and "--client_test_frac 0.001 holds out no sample" in err[0], err


def test_a_sweep_may_log_into_its_own_out_folder(tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "S" / "runs"
    common = ["--data_dir", str(tiny_data_dir), *TINY, *FLAGS, "--log", f"csv:{out}/metrics.csv"]
    assert sweep.main(["--out", str(out), "--scripts", "run_federated", "--", *common]) == 0
    assert (out / "metrics.csv").is_file() and (out / "federated.json").is_file()


def test_labels_past_int64_are_refused_without_a_warning(tmp_path):
    import warnings

    from fedlearn.data.cifar import _read_checked
    from fedlearn.errors import DataError

    folder = write_cifar(tmp_path, n_train=50, n_test=10)
    (folder / "test_batch").write_bytes(
        pickle.dumps({"data": np.zeros((10, 3072), np.uint8), "labels": [2**64 - 1] * 10})
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's RuntimeWarning would fail here
        with pytest.raises(DataError, match="labels 18446744073709551615 to 18446744073709551615 fall outside 0..9"):
            _read_checked(folder / "test_batch")
