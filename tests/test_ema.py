"""EMA of weights with bias correction, against values worked out by hand."""

import numpy as np
import pytest

from darkbp.ema import EMA
from darkbp.errors import DarkbpError
from darkbp.layers.base import Layer


class BNStub(Layer):
    """A connected-like layer with batch norm: parameters and rolling statistics."""

    type = "connected"
    param_names = ("biases", "weights", "scales")
    state_names = ("rolling_mean", "rolling_variance")

    def __init__(self, inputs, outputs, rng, dtype=np.float32):
        super().__init__((inputs, 1, 1), (outputs, 1, 1))
        self.weights = rng.standard_normal((outputs, inputs))
        for name in ("biases", "scales", "rolling_mean", "rolling_variance"):
            setattr(self, name, rng.standard_normal(outputs))
        self.astype(dtype)


class PoolStub(Layer):
    type = "maxpool"


def names(layer):
    return layer.param_names + layer.state_names


def network(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [BNStub(5, 4, rng, dtype), PoolStub((4, 1, 1), (4, 1, 1)), BNStub(4, 3, rng, dtype)]


@pytest.mark.parametrize("decay", [0.5, 0.9, 0.999, 0.9999])
def test_constant_weights_average_to_themselves_exactly(decay):
    layers = network(seed=1)
    ema = EMA(layers, decay)
    for _ in range(60):
        ema.update()
        for layer, avg in zip(layers, ema.averaged()):
            assert set(avg) == set(names(layer))
            for name in names(layer):
                np.testing.assert_array_equal(avg[name], getattr(layer, name), err_msg=name)


def test_hand_computed_sequence():
    layer = BNStub(1, 1, np.random.default_rng(0))
    ema = EMA([layer], decay=0.5)
    # w = 1, 2, 4:  e = 0.5, 1.25, 2.625;  corrected e/(1 - 0.5^t) = 1, 1.25/0.75, 2.625/0.875
    expected = [(0.5, 1.0), (1.25, 5 / 3), (2.625, 3.0)]
    for w, (e, corrected) in zip([1.0, 2.0, 4.0], expected):
        layer.weights[...] = w
        ema.update()
        assert ema.state_dict()["ema.0.weights"][0, 0] == e
        assert ema.averaged()[0]["weights"][0, 0] == np.float32(corrected)
    assert ema.t == 3


def test_hand_computed_step_change():
    layer = BNStub(1, 1, np.random.default_rng(0), np.float64)
    ema = EMA([layer], decay=0.9)
    layer.rolling_mean[...] = 10.0
    ema.update()   # e = 1, corrected 1/0.1 = 10
    assert ema.averaged()[0]["rolling_mean"][0] == pytest.approx(10.0, rel=1e-14)
    layer.rolling_mean[...] = 0.0
    ema.update()   # e = 0.9, corrected 0.9/0.19 = 90/19
    assert ema.averaged()[0]["rolling_mean"][0] == pytest.approx(90 / 19, rel=1e-14)


def test_before_any_update_the_average_is_the_current_value():
    layers = network()
    for layer, avg in zip(layers, EMA(layers, 0.99).averaged()):
        for name in names(layer):
            np.testing.assert_array_equal(avg[name], getattr(layer, name))


def drift(layers, rng):
    for layer in layers:
        for name in names(layer):
            getattr(layer, name)[...] += rng.standard_normal(getattr(layer, name).shape)


def test_swapped_in_and_restored():
    layers = network(seed=2)
    ema = EMA(layers, 0.9)
    rng = np.random.default_rng(3)
    for _ in range(5):
        drift(layers, rng)
        ema.update()
    raw = [{n: getattr(layer, n).copy() for n in names(layer)} for layer in layers]
    arrays = [{n: getattr(layer, n) for n in names(layer)} for layer in layers]
    averaged = ema.averaged()
    with ema.swapped_in():
        for layer, avg in zip(layers, averaged):
            for name in names(layer):
                np.testing.assert_array_equal(getattr(layer, name), avg[name])
                assert getattr(layer, name).dtype == np.float32
                assert not np.array_equal(getattr(layer, name), raw[layers.index(layer)][name])
    for layer, r, a in zip(layers, raw, arrays):
        for name in names(layer):
            np.testing.assert_array_equal(getattr(layer, name), r[name])
            assert getattr(layer, name) is a[name]


def test_restored_after_an_exception():
    layers = network(seed=4)
    ema = EMA(layers, 0.9)
    drift(layers, np.random.default_rng(5))
    ema.update()
    drift(layers, np.random.default_rng(6))
    raw = [{n: getattr(layer, n).copy() for n in names(layer)} for layer in layers]
    with pytest.raises(KeyError):
        with ema.swapped_in():
            raise KeyError("evaluation failed")
    for layer, r in zip(layers, raw):
        for name in names(layer):
            np.testing.assert_array_equal(getattr(layer, name), r[name])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(dtype):
    layers = network(dtype=dtype)
    ema = EMA(layers, 0.99)
    ema.update()
    for avg in ema.averaged():
        assert all(a.dtype == dtype for a in avg.values())


def test_state_dict_resumes_exactly():
    def run(layers, ema, seeds):
        for s in seeds:
            drift(layers, np.random.default_rng(s))
            ema.update()

    straight = network(seed=7)
    ema_straight = EMA(straight, 0.95)
    run(straight, ema_straight, [0, 1, 2])

    first = network(seed=7)
    ema_first = EMA(first, 0.95)
    run(first, ema_first, [0, 1])
    saved = ema_first.state_dict()
    ema_resumed = EMA(first, 0.95)
    ema_resumed.load_state_dict({**saved, "sgd.0.weights": np.zeros(1)})  # others' keys ignored
    assert ema_resumed.t == 2
    run(first, ema_resumed, [2])
    for a, b in zip(ema_resumed.averaged(), ema_straight.averaged()):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_state_from_another_network_is_an_error():
    ema = EMA(network(), 0.9)
    state = ema.state_dict()
    with pytest.raises(DarkbpError, match="ema.t"):
        ema.load_state_dict({k: v for k, v in state.items() if k != "ema.t"})
    with pytest.raises(DarkbpError, match="missing.*ema.2.rolling_variance"):
        ema.load_state_dict({k: v for k, v in state.items() if k != "ema.2.rolling_variance"})


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_bad_decay(decay):
    with pytest.raises(DarkbpError, match="decay"):
        EMA(network(), decay)
