"""The loop skeleton: tallies, evaluation cadence and the final evaluation, checkpoints when due."""

import math

import torch
from torch import nn

from fedlearn.core.checkpoint import Checkpointing
from fedlearn.data import Dataset
from fedlearn.loops.skeleton import LoopOptions, RunState, Tally


def test_the_tally_weighs_each_jobs_loss_by_its_samples_and_starts_over_after_an_evaluation():
    tally = Tally()
    tally.count(10, 2.0)
    tally.count(30, 1.0, accepted=False)
    assert tally.train_loss() == (10 * 2.0 + 30 * 1.0) / 40
    assert (tally.arrivals, tally.samples_trained, tally.accepted_since_eval) == (2, 40, 1)
    tally.evaluated()
    assert math.isnan(tally.train_loss()) and (tally.arrivals, tally.samples_trained) == (2, 40)


def test_a_job_without_samples_or_with_a_non_finite_loss_counts_but_leaves_the_loss_alone():
    tally = Tally()
    tally.count(0, float("nan"))
    tally.count(5, float("inf"))
    tally.count(4, 0.5)
    assert tally.train_loss() == 0.5 and tally.arrivals == 3 and tally.samples_trained == 9


def test_the_tally_survives_a_checkpoint():
    tally = Tally(7, 70, 2, 3.5, 20)
    assert Tally.from_state(tally.state()) == tally


class Constant(nn.Module):
    """Predicts class 0 for every sample, whatever its weight."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.stack([self.w.expand(x.shape[0]) + 1, torch.zeros(x.shape[0])], dim=1)


def _state(tmp_path, every=2):
    x, y = torch.zeros(4, 1, 2, 2), torch.tensor([0, 0, 1, 1])
    data = Dataset("test", x, y, x, y, mean=(0.0,), std=(1.0,), source="test", num_classes=2)
    checkpointing = Checkpointing(str(tmp_path / "c.pt"), every, {"seed": 0}, "run_test")
    return RunState(Constant(), data, LoopOptions(checkpointing=checkpointing, show_progress=False))


def test_evaluate_records_the_tally_and_finish_evaluates_only_a_step_not_yet_evaluated(tmp_path):
    state = _state(tmp_path)
    state.tally.count(8, 0.25)
    state.evaluate(torch.zeros(1), 1, 2.5)
    entry = state.recorder.history[-1]
    assert (entry["step"], entry["sim_time"], entry["test_accuracy"], entry["train_loss"]) == (1, 2.5, 0.5, 0.25)
    assert entry["samples_trained"] == 8 and entry["client_updates"] == 1
    state.finish(torch.zeros(1), 1, 2.5)
    assert len(state.recorder.history) == 1
    state.tally.count(8, 0.75)
    state.finish(torch.zeros(1), 2, 3.0)
    assert [e["step"] for e in state.recorder.history] == [1, 2] and state.recorder.history[-1]["train_loss"] == 0.75


def test_a_checkpoint_is_written_every_n_steps_and_at_the_end_with_the_common_fields(tmp_path):
    state = _state(tmp_path, every=3)
    written = []
    for step in range(1, 6):
        state.checkpoint(step, 5, lambda step=step: written.append(step) or {"step_field": step})
    assert written == [3, 5]
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert saved["script"] == "run_test" and saved["args"] == {"seed": 0} and saved["step_field"] == 5
    assert saved["record"]["history"] == []
