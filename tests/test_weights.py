"""Darknet .weights files: bytes assembled by hand from SPEC 7, loads, and clear errors."""

import re
import struct

import numpy as np
import pytest

from darkbp.errors import DarkbpError
from darkbp.layers.base import Layer
from darkbp.weights import read_header, load_weights, save_weights
from tests.conftest import connected_layer, conv_layer


class ShapeOnly(Layer):
    def __init__(self, type_, shape):
        super().__init__(shape, shape)
        self.sections = (type_,)


def empty_net(dtype=np.float32):
    """conv BN 2->2 1x1, maxpool, conv 2->1 2x2 (no BN), connected BN 4->2, connected 2->1, softmax."""
    return [conv_layer(2, 2, 1, True, side=3, dtype=dtype), ShapeOnly("maxpool", (2, 2, 2)),
            conv_layer(2, 1, 2, False, side=3, dtype=dtype), connected_layer(4, 2, True, dtype),
            connected_layer(2, 1, False, dtype), ShapeOnly("softmax", (1, 1, 1))]


def known_net(dtype=np.float32):
    conv_bn, _, conv, conn_bn, conn, _ = net = empty_net(dtype)
    conv_bn.biases[:] = [0.5, -0.5]
    conv_bn.scales[:] = [1.5, 2.5]
    conv_bn.rolling_mean[:] = [0.25, -0.25]
    conv_bn.rolling_variance[:] = [4.0, 8.0]
    conv_bn.weights[:, :, 0, 0] = [[1.0, 2.0], [3.0, 4.0]]   # [filter][channel]
    conv.biases[:] = [-1.0]
    conv.weights[0] = [[[0.0, 1.0], [10.0, 11.0]],            # [channel][ky][kx]
                       [[100.0, 101.0], [110.0, 111.0]]]
    conn_bn.biases[:] = [7.0, 8.0]
    conn_bn.weights[:] = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]  # [output][input]
    conn_bn.scales[:] = [0.125, 0.375]
    conn_bn.rolling_mean[:] = [-2.0, 2.0]
    conn_bn.rolling_variance[:] = [9.0, 16.0]
    conn.biases[:] = [0.75]
    conn.weights[:] = [[-3.0, 3.0]]
    return net


def floats(*values):
    return struct.pack(f"<{len(values)}f", *values)


# The body of known_net's file, in SPEC 7's order, written out by hand.
CONV_BN = (floats(0.5, -0.5)              # biases
           + floats(1.5, 2.5)             # scales
           + floats(0.25, -0.25)          # rolling_mean
           + floats(4.0, 8.0)             # rolling_variance
           + floats(1.0, 2.0, 3.0, 4.0))  # weights (filters, channels, 1, 1)
CONV = floats(-1.0) + floats(0.0, 1.0, 10.0, 11.0, 100.0, 101.0, 110.0, 111.0)
CONN_BN_HEAD = floats(7.0, 8.0)           # biases
CONN_BN_WEIGHTS = floats(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)            # (outputs, inputs)
CONN_BN_WEIGHTS_T = floats(1.0, 5.0, 2.0, 6.0, 3.0, 7.0, 4.0, 8.0)          # (inputs, outputs)
CONN_BN_TAIL = floats(0.125, 0.375) + floats(-2.0, 2.0) + floats(9.0, 16.0)  # scales, mean, var
CONN = floats(0.75) + floats(-3.0, 3.0)
BODY = CONV_BN + CONV + CONN_BN_HEAD + CONN_BN_WEIGHTS + CONN_BN_TAIL + CONN
BODY_TRANSPOSED = CONV_BN + CONV + CONN_BN_HEAD + CONN_BN_WEIGHTS_T + CONN_BN_TAIL + CONN
N_FLOATS = 12 + 9 + 2 + 8 + 6 + 3  # = 40


def assert_nets_equal(a, b):
    for la, lb in zip(a, b):
        for name in la.param_names + la.state_names:
            np.testing.assert_array_equal(getattr(la, name), getattr(lb, name), err_msg=name)


def test_saved_bytes_match_the_hand_built_layout(tmp_path):
    path = tmp_path / "net.weights"
    save_weights(path, known_net(), seen=2 ** 40 + 5)
    assert len(BODY) == 4 * N_FLOATS
    assert path.read_bytes() == struct.pack("<iiiQ", 0, 2, 0, 2 ** 40 + 5) + BODY


def test_float64_layers_are_saved_as_float32(tmp_path):
    path = tmp_path / "net.weights"
    save_weights(path, known_net(np.float64), seen=3)
    assert path.read_bytes() == struct.pack("<iiiQ", 0, 2, 0, 3) + BODY


def test_load_the_hand_built_file(tmp_path):
    path = tmp_path / "net.weights"
    path.write_bytes(struct.pack("<iiiQ", 0, 2, 0, 640) + BODY)
    net = empty_net()
    assert load_weights(path, net) == 640
    assert_nets_equal(net, known_net())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(0)
    source = empty_net()
    for layer in source:
        for name in layer.param_names + layer.state_names:
            getattr(layer, name)[...] = rng.standard_normal(getattr(layer, name).shape)
    path = tmp_path / "rt.weights"
    save_weights(path, source, seen=12345)
    target = empty_net(dtype)
    assert load_weights(path, target) == 12345
    for layer in target:
        assert all(getattr(layer, n).dtype == dtype for n in layer.param_names)
    assert_nets_equal(target, source)
    assert read_header(path) == (0, 2, 0, 12345)


@pytest.mark.parametrize("major, minor", [(0, 0), (0, 1), (1000, 0), (0, 1000)])
def test_old_headers_have_an_int32_seen(tmp_path, major, minor):
    # Darknet: uint64 only when major*10 + minor >= 2 and major, minor < 1000
    path = tmp_path / "old.weights"
    path.write_bytes(struct.pack("<iiii", major, minor, 0, 99) + BODY)
    net = empty_net()
    assert load_weights(path, net) == 99
    assert_nets_equal(net, known_net())
    assert read_header(path) == (major, minor, 0, 99)


@pytest.mark.parametrize("major, minor", [(1001, 0), (0, 1001)])
def test_transposed_connected_weights(tmp_path, major, minor):
    path = tmp_path / "t.weights"
    path.write_bytes(struct.pack("<iiii", major, minor, 0, 7) + BODY_TRANSPOSED)
    net = empty_net()
    assert load_weights(path, net) == 7
    assert_nets_equal(net, known_net())


def test_major_1_minor_0_has_a_uint64_seen(tmp_path):
    path = tmp_path / "v1.weights"
    path.write_bytes(struct.pack("<iiiQ", 1, 0, 0, 2 ** 33) + BODY)
    assert load_weights(path, empty_net()) == 2 ** 33


@pytest.mark.parametrize("body, found", [
    (BODY[:-4], f"found {N_FLOATS - 1}"),
    (BODY + floats(1.0), f"found {N_FLOATS + 1}"),
    (BODY + b"\0\0", f"found {N_FLOATS} and 2 stray bytes"),
    (b"", "found 0"),
])
def test_wrong_number_of_floats(tmp_path, body, found):
    path = tmp_path / "bad.weights"
    path.write_bytes(struct.pack("<iiiQ", 0, 2, 0, 1) + body)
    net = empty_net()
    with pytest.raises(DarkbpError, match=f"expected {N_FLOATS} floats after the header, {found}") \
            as err:
        load_weights(path, net)
    assert str(path) in str(err.value)
    assert_nets_equal(net, empty_net())  # nothing was touched


@pytest.mark.parametrize("header", [
    b"",
    struct.pack("<ii", 0, 2),
    struct.pack("<iii", 0, 2, 0) + b"\0\0",          # needs 8 bytes of seen
    struct.pack("<iii", 0, 1, 0) + b"\0\0",          # needs 4 bytes of seen
])
def test_too_short_for_a_header(tmp_path, header):
    path = tmp_path / "short.weights"
    path.write_bytes(header)
    with pytest.raises(DarkbpError, match=rf"too short for a \.weights header \({len(header)} bytes\)"):
        load_weights(path, empty_net())
    with pytest.raises(DarkbpError, match="too short"):
        read_header(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.weights"
    with pytest.raises(DarkbpError, match=re.escape(str(path)) + ".*No such file"):
        load_weights(path, empty_net())


def test_unwritable_path(tmp_path):
    (tmp_path / "plain").write_text("a regular file, not a folder")
    with pytest.raises(DarkbpError, match="cannot write"):
        save_weights(tmp_path / "plain" / "x.weights", known_net(), seen=0)


def test_saving_keeps_the_previous_file_on_failure(tmp_path):
    path = tmp_path / "net.weights"
    save_weights(path, known_net(), seen=1)
    before = path.read_bytes()
    broken = known_net()
    broken.append(ShapeOnly("local", (1, 1, 1)))
    broken[-1].param_names = ("weights",)           # a parameter it never allocated
    with pytest.raises(AttributeError, match="weights"):
        save_weights(path, broken, seen=2)
    assert path.read_bytes() == before
