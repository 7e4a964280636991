"""tests/golden_alexeyab.py's cpu_replay against AlexeyAB's fixtures of other sections.

cpu_replay composes darkbp's layers' gradients as AlexeyAB's CPU build does. Besides the
[sam] and [scale_channels] fixtures (tests/test_golden_alexeyab_layers.py), it reproduces
the fixtures with only convolutions, a [maxpool] and the final [avgpool] + [softmax]:
their weights after five steps differ from the true gradient's (darkbp's, the GPU build's)
only through the [avgpool]'s delta, which AlexeyAB's CPU never zeroes.
"""

from __future__ import annotations

import pytest

from tests.golden import Golden, relative
from tests.golden_alexeyab import cpu_replay
from tests.test_golden import LOSS_TOL, WEIGHTS_TOL


@pytest.mark.parametrize("name", ["adam_sgd_twin", "act_mish_swish"])
def test_cpu_replay_gives_alexeyabs_five_steps(name):
    fixture = Golden(f"alexeyab-new/{name}")
    run = cpu_replay(fixture)
    assert run.losses == pytest.approx([cost for cost, _ in fixture.losses], rel=LOSS_TOL)
    for step in (1, 5):
        for key, value in fixture.weights_after(step).items():
            assert relative(run.step_weights[step][key], value) < WEIGHTS_TOL, (step, key)
    darkbp = fixture.replay()
    assert max(relative(darkbp.step_weights[5][key], value)
               for key, value in run.step_weights[5].items()) > 0.1
