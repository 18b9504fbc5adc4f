import os

import pytest
import torch

from conftest import RAW_NAMES, run_script, write_dataset
from fedlearn.app import main


def call(script, argv, capsys):
    """Run a script in-process; returns (exit status, stderr lines)."""
    try:
        code = main(script, argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


BAD_FLAGS = [
    (["--workers", "0"], "--workers"),
    (["--workers", "100000"], "--workers"),
    (["--threads_per_worker", "0"], "--threads_per_worker"),
    (["--batch_size", "0"], "--batch_size"),
    (["--epoch", "-1"], "--epoch"),
    (["--global_epoch", "0"], "--global_epoch"),
    (["--local_epoch", "0"], "--local_epoch"),
    (["--num_clients", "0"], "--num_clients"),
    (["--num_select_clients", "9"], "--num_select_clients"),
    (["--num_select_clients", "0"], "--num_select_clients"),
    (["--init_lr", "0"], "--init_lr"),
    (["--init_lr", "-0.001"], "--init_lr"),
    (["--init_lr", "nan"], "--init_lr"),
    (["--batch_size", "ten"], "--batch_size"),
    (["--model", "resnet"], "--model"),
    (["--optimizer", "lbfgs"], "--optimizer"),
    (["--dataset", "cifar-100"], "--dataset"),
    (["--dataset", "cifar10", "--model", "cnn"], "--model cnn"),
    (["--model", "resnet20"], "--model resnet20"),
    (["--augment", "crop"], "--augment"),
    (["--device", "tpu"], "--device"),
    (["--seed", "-1"], "--seed"),
    (["--delay", "gamma"], "--delay"),
    (["--client_rate", "0"], "--client_rate"),
    (["--straggler_fraction", "1.5"], "--straggler_fraction"),
    (["--straggler_slowdown", "0.5"], "--straggler_slowdown"),
    (["--target_acc", "85"], "--target_acc"),
    (["--partition", "pathological"], "--partition"),
    (["--dirichlet_alpha", "0"], "--dirichlet_alpha"),
    (["--shards_per_client", "0"], "--shards_per_client"),
    (["--classes_per_client", "0"], "--classes_per_client"),
    (["--size_skew", "-1"], "--size_skew"),
    (["--prox_mu", "-0.1"], "--prox_mu"),
    (["--target_acc", "0"], "--target_acc"),
    (["--num_clients", "500", "--num_select_clients", "4"], "--num_clients"),  # more clients than samples
    (["--server_opt", "lamb"], "--server_opt"),
    (["--server_lr", "0"], "--server_lr"),
    (["--server_b1", "-0.1"], "--server_b1"),
    (["--server_b2", "1"], "--server_b2"),
    (["--server_tau", "0"], "--server_tau"),
    (["--server_tau", "-1e-3"], "--server_tau"),
    (["--server_momentum", "1.5"], "--server_momentum"),
    (["--drift_correction", "fednova"], "--drift_correction"),  # with the default --optimizer adam
    (["--drift_correction", "scaffold", "--optimizer", "adamw"], "--drift_correction"),
    (["--drift_correction", "fednova", "--optimizer", "sgd", "--prox_mu", "0.1"], "--drift_correction"),
    (["--drift_correction", "scaffold", "--optimizer", "sgd", "--gar", "median"], "--drift_correction"),
    (["--drift_correction", "fedmagic"], "--drift_correction"),
    (
        ["--drift_correction", "scaffold", "--optimizer", "sgd", "--distributed", "--checkpoint", "c.pt"],
        "--drift_correction",
    ),
    (["--compress", "powersgd"], "--compress"),
    (["--compress_ratio", "0"], "--compress_ratio"),
    (["--compress_ratio", "1.5"], "--compress_ratio"),
    (["--qsgd_levels", "0"], "--qsgd_levels"),
    (["--error_feedback"], "--error_feedback"),  # needs --compress topk
    (["--error_feedback", "--compress", "qsgd"], "--error_feedback"),
    (["--compress", "topk", "--error_feedback", "--distributed", "--checkpoint", "c.pt"], "--error_feedback"),
    (["--uplink_mbps", "-1"], "--uplink_mbps"),
    (["--downlink_mbps", "nan"], "--downlink_mbps"),
    (["--latency", "-0.1"], "--latency"),
    (["--bandwidth", "tiers"], "--bandwidth"),
    (["--bandwidth_spread", "-1"], "--bandwidth_spread"),
    (["--dp_clip", "0"], "--dp_clip"),
    (["--dp_clip", "-1"], "--dp_clip"),
    (["--dp_clip", "1", "--dp_noise", "-1"], "--dp_noise"),
    (["--dp_clip", "1", "--dp_delta", "0"], "--dp_delta"),
    (["--dp_clip", "1", "--dp_delta", "1"], "--dp_delta"),
]
FEDERATED_BAD_FLAGS = [
    (["--workers", "2", "--distributed"], "--workers"),
    (["--workers", "2", "--drift_correction", "scaffold", "--optimizer", "sgd", "--checkpoint", "c.pt"], "--workers"),
    (["--compress", "topk", "--drift_correction", "scaffold", "--optimizer", "sgd"], "--compress"),
    (["--dp_clip", "1", "--gar", "median"], "--dp_clip"),
    (["--dp_clip", "1", "--clip_norm", "5"], "--dp_clip"),
    (["--dp_clip", "1", "--drift_correction", "fednova", "--optimizer", "sgd"], "--dp_clip"),
]
ASYNC_BAD_FLAGS = [
    (["--workers", "2", "--compress", "topk", "--error_feedback", "--checkpoint", "c.pt"], "--workers"),
    (["--algorithm", "fedprox"], "--algorithm"),
    (["--alpha", "0"], "--alpha"),
    (["--alpha", "1.5"], "--alpha"),
    (["--staleness", "cubic"], "--staleness"),
    (["--staleness_a", "-1"], "--staleness_a"),
    (["--staleness_b", "-2"], "--staleness_b"),
    (["--buffer_size", "0"], "--buffer_size"),
    (["--server_opt", "adam"], "--server_opt"),  # FedAsync has no server optimizer
    (["--drift_correction", "fednova", "--optimizer", "sgd"], "--drift_correction"),  # synchronous only
    (["--concurrency", "0"], "--concurrency"),
    (["--concurrency", "9"], "--concurrency"),
    (["--max_updates", "0"], "--max_updates"),
    (["--max_staleness", "-1"], "--max_staleness"),
    (["--eval_every", "0"], "--eval_every"),
    (["--algorithm", "fedbuff", "--buffer_size", "30", "--max_updates", "20"], "--buffer_size"),
    (["--dp_clip", "1"], "--dp_clip"),  # accounted for synchronous rounds only
]
CASES = [
    (script, argv, flag)
    for script in ("run_baseline", "run_federated", "run_async")
    for argv, flag in BAD_FLAGS
    if not (script == "run_baseline" and "500" in argv)
]  # the baseline does not partition the data
CASES += [("run_async", argv, flag) for argv, flag in ASYNC_BAD_FLAGS]
CASES += [("run_federated", argv, flag) for argv, flag in FEDERATED_BAD_FLAGS]
CASES += [
    (script, ["--partition", "classes", "--classes_per_client", "1"], "--classes_per_client")
    for script in ("run_federated", "run_async")
]  # 8 clients x 1 label cannot cover 10 labels


@pytest.mark.parametrize("script, argv, flag", CASES)
def test_bad_flag_values_exit_2_with_one_line_naming_the_flag(script, argv, flag, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "out.json"
    code, err = call(
        script,
        [
            "--data_dir",
            str(tiny_data_dir),
            "--dataset",
            "mnist",
            "--epoch",
            "1",
            "--global_epoch",
            "1",
            "--local_epoch",
            "1",
            "--no_progress",
            "--save",
            str(out),
            *argv,
        ],
        capsys,
    )
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"{script}.py: error:") and flag in err[0]
    assert not out.exists()


def test_save_into_a_missing_folder_is_refused_before_training(tiny_data_dir, tmp_path, capsys):
    code, err = call(
        "run_federated", ["--data_dir", str(tiny_data_dir), "--save", str(tmp_path / "no" / "x.json")], capsys
    )
    assert code == 2 and len(err) == 1 and "--save" in err[0]


def test_data_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, err = call("run_baseline", ["--data_dir", str(tmp_path / "file")], capsys)
    assert code == 2 and len(err) == 1 and "--data_dir" in err[0]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_data_dir_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    try:
        code, err = call("run_baseline", ["--data_dir", str(locked)], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and len(err) == 1 and "not readable" in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_usage_error(tiny_data_dir, capsys):
    code, err = call("run_baseline", ["--data_dir", str(tiny_data_dir), "--device", "cuda"], capsys)
    assert code == 2 and len(err) == 1 and "--device cuda" in err[0]


@pytest.mark.slow
def test_corrupt_idx_files_end_with_one_line_and_no_results_file(tmp_path):
    raw = write_dataset(tmp_path / "d")
    (raw / RAW_NAMES["test_labels"]).write_bytes(b"\x00\x00\x08")
    out = tmp_path / "out.json"
    proc = run_script("run_federated.py", "--data_dir", str(tmp_path / "d"), "--dataset", "mnist", "--save", str(out))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "corrupt" in lines[0]
    assert "Traceback" not in proc.stderr and not out.exists()


@pytest.mark.slow
def test_missing_explicit_mnist_says_where_to_put_the_files(tmp_path):
    proc = run_script("run_baseline.py", "--data_dir", str(tmp_path), "--dataset", "mnist", "--no_download")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1
    assert str(tmp_path / "MNIST" / "raw") in lines[0] and "Traceback" not in proc.stderr


def test_async_flags_belong_to_run_async_only(capsys):
    code, err = call("run_federated", ["--algorithm", "fedbuff"], capsys)
    assert code == 2 and "--algorithm" in err[0]


@pytest.mark.slow
def test_usage_error_from_a_real_process_has_no_traceback():
    proc = run_script("run_federated.py", "--num_clients", "4", "--num_select_clients", "5")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
