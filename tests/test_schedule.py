"""Learning-rate policies against numbers worked out by hand from SPEC 2 / Darknet."""

import dataclasses
import math

import numpy as np
import pytest

from darkbp.errors import DarkbpError
from darkbp.schedule import Schedule


def close(x):
    """x as Darknet returns it: a C float, so within one float32 spacing of the exact x
    (tests/test_schedule_alexeyab.py checks the bits against AlexeyAB's own rates)."""
    return pytest.approx(x, rel=2.0 ** -23, abs=1e-15)


def test_defaults_are_darknets():
    s = Schedule()
    assert (s.learning_rate, s.policy, s.step, s.scale) == (0.001, "constant", 1, 1)
    assert (s.steps, s.scales, s.gamma, s.power) == ((), (), 1, 4)
    assert (s.burn_in, s.max_batches) == (0, 0)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Schedule().learning_rate = 1.0


@pytest.mark.parametrize("batch_num", [0, 5, 1000])
def test_constant(batch_num):
    assert Schedule(learning_rate=0.01).rate(batch_num) == close(0.01)


@pytest.mark.parametrize("batch_num, expected", [
    (0, 0.0),                  # burn_in starts from nothing
    (5, 0.1 * 0.0625),         # (5/10)^4 = 1/16
    (9, 0.1 * float(np.float32(0.9)) ** 4),   # 0.9^4, Darknet's 9/10 being a float division
    (10, 0.1),                 # burn-in over: the policy takes over
])
def test_burn_in(batch_num, expected):
    s = Schedule(learning_rate=0.1, burn_in=10, power=4)
    assert s.rate(batch_num) == close(expected)


def test_burn_in_is_checked_before_the_policy():
    s = Schedule(learning_rate=0.1, policy="steps", steps=(2,), scales=(0.1,), burn_in=4)
    assert s.rate(3) == close(0.1 * 0.31640625)  # 0.75^4, not scaled although 3 >= 2
    assert s.rate(4) == close(0.01)


@pytest.mark.parametrize("batch_num, expected", [
    (0, 0.1), (2, 0.1), (3, 0.05), (5, 0.05), (6, 0.025), (7, 0.025), (9, 0.0125),
])
def test_step_integer_division(batch_num, expected):
    s = Schedule(learning_rate=0.1, policy="step", step=3, scale=0.5)
    assert s.rate(batch_num) == close(expected)


@pytest.mark.parametrize("batch_num, expected", [
    (0, 1.0), (9, 1.0),
    (10, 0.1),        # Darknet: `steps[i] > batch_num` stops, so the scale applies AT the step
    (19, 0.1),
    (20, 0.05),
    (1000, 0.05),
])
def test_steps_boundaries(batch_num, expected):
    s = Schedule(learning_rate=1.0, policy="steps", steps=(10, 20), scales=(0.1, 0.5))
    assert s.rate(batch_num) == close(expected)


def test_steps_stop_at_the_first_step_not_reached():
    # Darknet's loop returns at the first step above batch_num, even if a later one is below.
    s = Schedule(learning_rate=1.0, policy="steps", steps=(20, 10), scales=(0.1, 0.5))
    assert s.rate(15) == close(1.0)
    assert s.rate(20) == close(0.05)


@pytest.mark.parametrize("batch_num, expected", [(0, 0.1), (1, 0.09), (2, 0.081), (3, 0.0729)])
def test_exp(batch_num, expected):
    assert Schedule(learning_rate=0.1, policy="exp", gamma=0.9).rate(batch_num) == close(expected)


@pytest.mark.parametrize("power, batch_num, expected", [
    (4, 0, 0.1),
    (4, 50, 0.1 * 0.0625),        # 0.5^4
    (4, 75, 0.1 * 0.00390625),    # 0.25^4
    (2, 90, 0.1 * float(1 - np.float32(0.9)) ** 2),   # 0.1^2, from Darknet's float 1 - 0.9
    (4, 100, 0.0),
])
def test_poly(power, batch_num, expected):
    s = Schedule(learning_rate=0.1, policy="poly", power=power, max_batches=100)
    assert s.rate(batch_num) == close(expected)


def test_poly_needs_max_batches():
    with pytest.raises(DarkbpError, match="max_batches"):
        Schedule(policy="poly").rate(3)


@pytest.mark.parametrize("batch_num, expected", [
    (9, 0.075),   # 1 / (1 + 1/3)
    (10, 0.05),   # 1 / (1 + 1)
    (11, 0.025),  # 1 / (1 + 3)
])
def test_sig(batch_num, expected):
    s = Schedule(learning_rate=0.1, policy="sig", gamma=math.log(3), step=10)
    assert s.rate(batch_num) == close(expected)


def test_sig_far_past_the_step_is_zero_without_overflow():
    s = Schedule(learning_rate=0.1, policy="sig", gamma=1.0, step=0)
    assert s.rate(5000) == close(0.0)


def test_sigmoid_is_darknets_name_for_sig():
    assert Schedule(policy="sigmoid").policy == "sig"


def test_random_uses_the_given_generator():
    s = Schedule(learning_rate=0.1, policy="random", power=2)
    rng = np.random.default_rng(7)
    u1, u2 = np.random.default_rng(7).random(2)
    assert s.rate(0, rng) == close(0.1 * u1 * u1)
    assert s.rate(0, rng) == close(0.1 * u2 * u2)


def test_random_without_generator_is_refused():
    with pytest.raises(ValueError):
        Schedule(policy="random").rate(0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(policy="cosine"), "unknown policy 'cosine'"),
    (dict(policy="steps"), "needs both 'steps' and 'scales'"),
    (dict(policy="steps", steps=(10,)), "needs both 'steps' and 'scales'"),
    (dict(policy="steps", scales=(0.1,)), "needs both 'steps' and 'scales'"),
    (dict(policy="steps", steps=(10, 20), scales=(0.1,)), "2 steps but 1 scales"),
    (dict(policy="step", step=0), "step > 0"),
    (dict(burn_in=-1), "burn_in"),
])
def test_bad_values_are_darkbp_errors(kwargs, message):
    with pytest.raises(DarkbpError, match=message):
        Schedule(**kwargs)
