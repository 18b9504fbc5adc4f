import numpy as np
import pytest

from fedlearn.comm.clock import ClientSpeeds, ClockConfig, draw_speeds


def test_job_duration_is_samples_over_rate_plus_communication():
    speeds = ClientSpeeds(rates=np.array([100.0, 10.0]), comm_delay=0.5)
    assert speeds.job_duration(0, 200) == pytest.approx(2.5)
    assert speeds.job_duration(1, 200) == pytest.approx(20.5)


def test_synchronous_round_lasts_as_long_as_its_slowest_client():
    speeds = ClientSpeeds(rates=np.array([100.0, 10.0, 50.0]))
    assert speeds.round_duration([0, 2], [100, 100]) == pytest.approx(2.0)
    assert speeds.round_duration([0, 1, 2], [100, 100, 100]) == pytest.approx(10.0)


def test_straggler_model_slows_the_requested_share():
    config = ClockConfig("straggler", client_rate=100, straggler_fraction=0.25, straggler_slowdown=10)
    speeds = draw_speeds(8, np.random.default_rng(0), config)
    assert sorted(speeds.rates.tolist()) == [10.0, 10.0] + [100.0] * 6


@pytest.mark.parametrize("model", ["none", "straggler", "lognormal", "uniform"])
def test_speeds_are_drawn_from_the_seed(model):
    a = draw_speeds(16, np.random.default_rng(3), ClockConfig(model, delay_spread=1.0))
    b = draw_speeds(16, np.random.default_rng(3), ClockConfig(model, delay_spread=1.0))
    assert np.array_equal(a.rates, b.rates) and (a.rates > 0).all()


def test_uniform_slowdowns_stay_in_range():
    speeds = draw_speeds(100, np.random.default_rng(0), ClockConfig("uniform", client_rate=1000, delay_spread=2.0))
    assert (speeds.rates <= 1000).all() and (speeds.rates >= 1000 / 3).all()
